"""Tests for clipgeo.sources: the procedural shapes dataset and the COCO captions reader."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clipgeo.sources import (
    Sample,
    ShapesSpec,
    SourceError,
    generate_shapes,
    read_coco_captions,
    shapes_split,
)
from clipgeo.sources import shapes as shapes_mod

SMALL = ShapesSpec(n_train=40, n_val=10, captions_per_image=3, image_size=64, seed=0)

# The test's own vocabulary (deliberately not imported from the module under test).
SHAPE_FORMS = {
    "circle": ("circle", "circles", "disc", "discs"),
    "square": ("square", "squares"),
    "triangle": ("triangle", "triangles"),
    "star": ("star", "stars"),
    "cross": ("cross", "crosses", "plus sign", "plus signs"),
    "diamond": ("diamond", "diamonds"),
}
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan")
RGB = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 80, 235), "yellow": (245, 215, 20),
    "orange": (250, 130, 20), "purple": (140, 45, 195), "pink": (250, 120, 190),
    "cyan": (30, 205, 225),
}
BG_WORDS = {"white": ("white",), "grey": ("grey", "gray"), "black": ("black",)}
SIZE_FORMS = {"small": ("small", "little"), "large": ("large", "big")}
COUNT_FORMS = {1: ("a", "an", "one"), 2: ("two",), 3: ("three",)}
RELATION_FORMS = {
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "left of": ("on the left of", "to the left of", "left of"),
    "right of": ("on the right of", "to the right of", "right of"),
}
INVERSE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
POSITION_FORMS = {
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


def _alt(words: tuple[str, ...]) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), SMALL, progress=False)


# --------------------------------------------------------------------------- shapes: files


def test_layout_and_coco_format(dataset: Path) -> None:
    assert dataset.name == SMALL.dataset_id()
    assert dataset.name.startswith("shapes-")
    assert json.loads((dataset / "DONE").read_text())["seed"] == SMALL.seed
    all_image_ids: set[int] = set()
    all_ann_ids: set[int] = set()
    for split, n in (("train", SMALL.n_train), ("val", SMALL.n_val)):
        ann_path, image_dir = shapes_split(dataset, split)
        assert ann_path == dataset / "annotations" / f"captions_{split}.json"
        assert image_dir == dataset / split
        data = _load(ann_path)
        assert {"info", "images", "annotations", "licenses", "clipgeo_attributes"} <= set(data)
        assert len(data["images"]) == n == len(list(image_dir.glob("*.png")))
        assert len(data["annotations"]) == n * SMALL.captions_per_image
        assert len(data["clipgeo_attributes"]) == n
        for img in data["images"]:
            assert {"id", "file_name", "width", "height"} <= set(img)
            assert (img["width"], img["height"]) == (64, 64)
            with Image.open(image_dir / img["file_name"]) as im:
                assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"
        for ann in data["annotations"]:
            assert {"id", "image_id", "caption"} <= set(ann)
        ids = {img["id"] for img in data["images"]}
        assert ids == {a["image_id"] for a in data["clipgeo_attributes"]}
        assert not ids & all_image_ids, "image ids must be unique across splits"
        all_image_ids |= ids
        ann_ids = {a["id"] for a in data["annotations"]}
        assert len(ann_ids) == len(data["annotations"]) and not ann_ids & all_ann_ids
        all_ann_ids |= ann_ids
    assert not [p for p in dataset.parent.iterdir() if ".tmp-" in p.name], "temp dir left behind"


def test_image_size_parameter(tmp_path: Path) -> None:
    folder = generate_shapes(tmp_path, ShapesSpec(n_train=3, n_val=0, image_size=32), progress=False)
    for png in (folder / "train").glob("*.png"):
        with Image.open(png) as im:
            assert im.size == (32, 32)
    assert _load(shapes_split(folder, "val")[0])["images"] == []


def test_determinism_same_seed_identical(dataset: Path, tmp_path: Path) -> None:
    again = generate_shapes(tmp_path, SMALL, progress=False)
    assert again.name == dataset.name
    assert _tree_bytes(again) == _tree_bytes(dataset)


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other_spec = ShapesSpec(n_train=SMALL.n_train, n_val=SMALL.n_val, seed=1)
    assert other_spec.dataset_id() != SMALL.dataset_id()
    other = generate_shapes(tmp_path, other_spec, progress=False)
    a, b = _tree_bytes(dataset), _tree_bytes(other)
    assert a["annotations/captions_train.json"] != b["annotations/captions_train.json"]
    differing = [k for k in a if k.endswith(".png") and a[k] != b.get(k)]
    assert len(differing) > 0.9 * (SMALL.n_train + SMALL.n_val)


def test_train_images_do_not_depend_on_split_sizes(dataset: Path, tmp_path: Path) -> None:
    smaller = generate_shapes(tmp_path, ShapesSpec(n_train=5, n_val=2), progress=False)
    a, b = _tree_bytes(dataset), _tree_bytes(smaller)
    for name in ("train/000001.png", "train/000005.png"):
        assert a[name] == b[name]


def test_idempotent_returns_existing(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not regenerate a complete dataset")

    monkeypatch.setattr(shapes_mod, "_make_split", boom)
    assert generate_shapes(dataset.parent, SMALL, progress=False) == dataset


def test_crash_leaves_no_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_render = shapes_mod._render

    def flaky(*args: Any, **kwargs: Any) -> Image.Image:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    spec = ShapesSpec(n_train=6, n_val=2)
    monkeypatch.setattr(shapes_mod, "_render", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes(tmp_path, spec, progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shapes_mod, "_render", real_render)
    folder = generate_shapes(tmp_path, spec, progress=False)
    assert (folder / "DONE").is_file() and len(list((folder / "train").glob("*.png"))) == 6


def test_incomplete_target_is_reported(tmp_path: Path) -> None:
    spec = ShapesSpec(n_train=2, n_val=1)
    (tmp_path / spec.dataset_id()).mkdir()
    with pytest.raises(SourceError, match="DONE"):
        generate_shapes(tmp_path, spec, progress=False)


def test_spec_validation_and_id() -> None:
    assert ShapesSpec().dataset_id() == ShapesSpec().dataset_id()
    assert ShapesSpec(image_size=32).dataset_id() != ShapesSpec().dataset_id()
    assert ShapesSpec(captions_per_image=5).dataset_id() != ShapesSpec().dataset_id()
    with pytest.raises(SourceError, match="captions_per_image"):
        ShapesSpec(captions_per_image=0)
    with pytest.raises(SourceError, match="n_train"):
        ShapesSpec(n_train=-1)
    with pytest.raises(SourceError, match="split"):
        shapes_split(Path("x"), "test")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- shapes: content


def _groups(attr: dict[str, Any]) -> list[dict[str, Any]]:
    by_group: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for obj in attr["objects"]:
        by_group[obj["group"]].append(obj)
    groups = []
    for gi in sorted(by_group):
        objs = by_group[gi]
        first = objs[0]
        assert all((o["shape"], o["colour"], o["size"]) == (first["shape"], first["colour"], first["size"])
                   for o in objs), "a group holds identical shapes"
        groups.append({"shape": first["shape"], "colour": first["colour"], "size": first["size"],
                       "count": len(objs), "objects": objs})
    return groups


def _np_regex(g: dict[str, Any]) -> str:
    return (rf"\b{_alt(COUNT_FORMS[g['count']])} (?:{_alt(SIZE_FORMS[g['size']])} )?"
            rf"{re.escape(g['colour'])} {_alt(SHAPE_FORMS[g['shape']])}\b")


def _relation_holds(pred: str, first: list[dict[str, Any]], second: list[dict[str, Any]]) -> bool:
    if pred == "above":
        return max(o["y"] for o in first) < min(o["y"] for o in second)
    if pred == "below":
        return min(o["y"] for o in first) > max(o["y"] for o in second)
    if pred == "left of":
        return max(o["x"] for o in first) < min(o["x"] for o in second)
    return min(o["x"] for o in first) > max(o["x"] for o in second)


def _check_caption(caption: str, attr: dict[str, Any]) -> None:
    groups = _groups(attr)
    bg = attr["background"]
    # Every group is mentioned with the right count, (optional) size, colour and shape.
    spans = []
    for g in groups:
        m = re.search(_np_regex(g), caption)
        assert m, f"{caption!r} does not describe group {g}"
        spans.append(m.span())
    # No colour or shape that is not in the image is mentioned.
    for colour in SHAPE_COLOURS:
        if re.search(rf"\b{colour}\b", caption):
            assert colour in {g["colour"] for g in groups}, f"{caption!r}: wrong colour {colour}"
    for shape, forms in SHAPE_FORMS.items():
        if re.search(rf"\b{_alt(forms)}\b", caption):
            assert shape in {g["shape"] for g in groups}, f"{caption!r}: wrong shape {shape}"
    for word in ("one", "two", "three"):
        if re.search(rf"\b{word}\b", caption):
            count = {"one": 1, "two": 2, "three": 3}[word]
            assert count in {g["count"] for g in groups}, f"{caption!r}: wrong count {word}"
    # Background words, when present, are right.
    if "background" in caption:
        assert re.search(rf"\b{_alt(BG_WORDS[bg['colour']])}\b", caption), caption
        assert ("gradient" in caption) == (bg["kind"] == "gradient"), caption
        assert bool(re.search(r"\b(noisy|grainy)\b", caption)) == (bg["kind"] == "noise"), caption
    # A relation between the two groups, when stated, holds for the object positions.
    if len(groups) == 2:
        order = sorted(range(2), key=lambda i: spans[i][0])
        between = caption[spans[order[0]][1]:spans[order[1]][0]].strip()
        if between != "and":
            preds = [p for p, forms in RELATION_FORMS.items() if between in forms]
            assert preds, f"{caption!r}: unknown relation {between!r}"
            first, second = groups[order[0]]["objects"], groups[order[1]]["objects"]
            assert _relation_holds(preds[0], first, second), f"{caption!r} is false for {attr}"
    elif attr["position"] is not None:
        stated = [p for p, forms in POSITION_FORMS.items()
                  if re.search(rf"\b{_alt(forms)}(?= on | against |$)", caption)]
        assert stated in ([], [attr["position"]]), f"{caption!r}: position is {attr['position']}"


def test_captions_are_true_of_their_images(dataset: Path) -> None:
    n_two_groups = n_relation_captions = 0
    for split in ("train", "val"):
        data = _load(shapes_split(dataset, split)[0])
        attrs = {a["image_id"]: a for a in data["clipgeo_attributes"]}
        captions: dict[int, list[str]] = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann["image_id"]].append(ann["caption"])
        for image_id, caps in captions.items():
            attr = attrs[image_id]
            assert len(caps) == SMALL.captions_per_image
            assert len(set(caps)) == len(caps), f"duplicate captions for image {image_id}: {caps}"
            if attr["relation"] is not None:
                n_two_groups += 1
                groups = _groups(attr)
                assert _relation_holds(attr["relation"]["predicate"], groups[0]["objects"],
                                       groups[1]["objects"])
            for caption in caps:
                _check_caption(caption, attr)
                n_relation_captions += any(
                    f" {w} " in caption for forms in RELATION_FORMS.values() for w in forms
                )
    assert n_two_groups > 5 and n_relation_captions > 10


def test_attribute_vocabulary(dataset: Path) -> None:
    data = _load(shapes_split(dataset, "train")[0])
    seen_shapes, seen_colours, seen_bg = set(), set(), set()
    for attr in data["clipgeo_attributes"]:
        assert attr["background"]["kind"] in {"plain", "gradient", "noise"}
        assert attr["background"]["colour"] in BG_WORDS  # achromatic: never a shape colour
        seen_bg.add(attr["background"]["kind"])
        for obj in attr["objects"]:
            assert obj["shape"] in SHAPE_FORMS and obj["colour"] in SHAPE_COLOURS
            assert obj["size"] in {"small", "large"} and 0 < obj["x"] < 1 and 0 < obj["y"] < 1
            seen_shapes.add(obj["shape"])
            seen_colours.add(obj["colour"])
        assert all(1 <= n <= 3 for n in (g["count"] for g in _groups(attr)))
    assert len(seen_shapes) >= 5 and len(seen_colours) >= 6 and seen_bg == {"plain", "gradient", "noise"}


def test_pixels_match_attributes(dataset: Path) -> None:
    """The pixel at each object's centre has (close to) the object's colour."""
    ann_path, image_dir = shapes_split(dataset, "train")
    data = _load(ann_path)
    files = {img["id"]: img["file_name"] for img in data["images"]}
    palette = np.array([RGB[c] for c in SHAPE_COLOURS], dtype=float)
    for attr in data["clipgeo_attributes"]:
        with Image.open(image_dir / files[attr["image_id"]]) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=float)
        size = pixels.shape[0]
        for obj in attr["objects"]:
            px = pixels[int(obj["y"] * size), int(obj["x"] * size)]
            nearest = SHAPE_COLOURS[int(np.argmin(((palette - px) ** 2).sum(axis=1)))]
            assert nearest == obj["colour"], (attr["image_id"], obj, px)


# --------------------------------------------------------------------------- COCO reader


def test_read_generated_split_round_trip(dataset: Path) -> None:
    ann_path, image_dir = shapes_split(dataset, "train")
    data = _load(ann_path)
    samples = read_coco_captions(ann_path, image_dir)
    assert all(isinstance(s, Sample) for s in samples)
    assert len(samples) == len(data["annotations"])
    assert len({s.sample_id for s in samples}) == len(samples)
    expected = sorted((a["image_id"], a["id"], a["caption"]) for a in data["annotations"])
    assert [(int(s.image_id), int(s.sample_id), s.caption) for s in samples] == expected
    by_image: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        assert Path(s.image_ref).is_absolute() and Path(s.image_ref).is_file()
        by_image[s.image_id].add(s.image_ref)
    assert len(by_image) == SMALL.n_train
    assert all(len(refs) == 1 for refs in by_image.values()), "captions of one image share its file"
    counts = defaultdict(int)
    for s in samples:
        counts[s.image_id] += 1
    assert set(counts.values()) == {SMALL.captions_per_image}


def test_limit_images(dataset: Path) -> None:
    ann_path, image_dir = shapes_split(dataset, "val")
    full = read_coco_captions(ann_path, image_dir)
    limited = read_coco_captions(ann_path, image_dir, limit_images=4)
    assert len({s.image_id for s in limited}) == 4
    assert limited == full[: 4 * SMALL.captions_per_image]
    assert read_coco_captions(ann_path, image_dir, limit_images=0) == []
    assert read_coco_captions(ann_path, image_dir, limit_images=10_000) == full
    with pytest.raises(SourceError, match="limit_images"):
        read_coco_captions(ann_path, image_dir, limit_images=-1)


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_reader_cleaning_and_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = {
        "images": [
            {"id": 10, "file_name": "b.jpg"},
            {"id": 2, "file_name": "a.jpg"},
            {"id": 7, "file_name": "no_captions.jpg"},
        ],
        "annotations": [
            {"id": 5, "image_id": 10, "caption": "  a dog on a sofa \n"},
            {"id": 3, "image_id": 2, "caption": "a cat"},
            {"id": 1, "image_id": 2, "caption": "a small cat"},
            {"id": 4, "image_id": 2, "caption": "   "},
            {"id": 3, "image_id": 10, "caption": "duplicate id"},
            {"id": 9, "image_id": 99, "caption": "image not listed"},
        ],
    }
    ann = _write(tmp_path / "captions.json", data)
    with caplog.at_level(logging.WARNING, logger="clipgeo.sources.coco"):
        samples = read_coco_captions(ann, tmp_path)
    assert [(s.image_id, s.sample_id, s.caption) for s in samples] == [
        ("2", "1", "a small cat"), ("2", "3", "a cat"), ("10", "5", "a dog on a sofa"),
    ]
    assert samples[0].image_ref == str((tmp_path / "a.jpg").resolve())
    text = caplog.text
    assert "1 empty caption" in text and "1 annotation(s) with a duplicate id" in text
    assert "not in 'images'" in text
    assert "1 image(s) without any caption" in text  # no_captions.jpg
    assert read_coco_captions(ann, tmp_path, limit_images=1) == samples[:2]


def test_ingest_image_check_one_reject_per_bad_file(tmp_path: Path) -> None:
    """Folder and webdataset sources through the ingest image check: a bad file is one reject
    carrying its captions; an image whose captions were all refused is counted once."""
    import csv
    import io
    import tarfile

    from clipgeo.sources import read_folder, read_webdataset
    from clipgeo.stages.ingest import drop_bad_images

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "ok.jpg")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "lonely.jpg")
    with (tmp_path / "c.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["image", "caption"], ["ok.jpg", "a"], ["gone.jpg", "b"], ["gone.jpg", "c"],
                                  ["ok.jpg", " "], ["lonely.jpg", ""]])
    read = drop_bad_images(read_folder(tmp_path, tmp_path / "c.csv"))
    assert [s.caption for s in read.samples] == ["a"]
    got = [(r.stage, r.reason, r.image_id, r.n_images, r.n_captions) for r in read.rejects]
    assert got == [("caption", "empty caption", "ok.jpg", 0, 1),       # ok.jpg keeps its other caption
                   ("caption", "empty caption", "lonely.jpg", 1, 1),   # lonely.jpg is lost with it
                   ("read", "missing file", "gone.jpg", 1, 2)]         # one row for two captions
    assert read.rejects[2].item_ref == str(tmp_path / "gone.jpg")

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for name, data in (("a.jpg", buf.getvalue()), ("a.txt", b"fine"), ("b.jpg", buf.getvalue()),
                           ("b.txt", b""), ("c.jpg", b"plain text, not a JPEG"), ("c.txt", b"text")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    read = drop_bad_images(read_webdataset(str(tmp_path / "s.tar")))
    assert [s.sample_id for s in read.samples] == ["a"]
    assert [(r.sample_id, r.stage, r.reason, r.n_images, r.n_captions) for r in read.rejects] == [
        ("b", "caption", "empty caption", 1, 1), (None, "decode", "not an image (cannot identify)", 1, 1)]


def test_reader_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "captions_val2017.json"
    with pytest.raises(SourceError, match=r"not found.*captions_val2017\.json"):
        read_coco_captions(missing, tmp_path)
    with pytest.raises(SourceError, match="not a file"):
        read_coco_captions(tmp_path, tmp_path)


def test_reader_invalid_json(tmp_path: Path) -> None:
    bad = tmp_path / "captions_bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(SourceError, match=r"captions_bad\.json.*not valid JSON.*line 1"):
        read_coco_captions(bad, tmp_path)
    _write(bad, [1, 2])
    with pytest.raises(SourceError, match="top level must be a JSON object"):
        read_coco_captions(bad, tmp_path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"annotations": []}, "'images'"),
        ({"images": []}, "'annotations'"),
        ({"images": [{"file_name": "a.jpg"}], "annotations": []}, r"images\[0\] is missing the key 'id'"),
        ({"images": [{"id": 1}], "annotations": []}, "'file_name'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1}]},
         r"annotations\[0\] is missing the key 'caption'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "caption": "x"}]},
         "'image_id'"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}],
          "annotations": [{"id": 1, "image_id": 1, "caption": 5}]}, "must be a string"),
        ({"images": {}, "annotations": []}, "must be a list"),
    ],
)
def test_reader_missing_keys(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    ann = _write(tmp_path / "captions_x.json", data)
    with pytest.raises(SourceError, match=r"captions_x\.json") as info:
        read_coco_captions(ann, tmp_path)
    assert re.search(key, str(info.value)), str(info.value)


def test_reader_missing_image_dir(tmp_path: Path) -> None:
    ann = _write(tmp_path / "captions.json", {"images": [], "annotations": []})
    with pytest.raises(SourceError, match="image folder not found"):
        read_coco_captions(ann, tmp_path / "nope")
