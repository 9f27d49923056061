"""Protocols select exactly the documented subset (issue 25), on COCO-format fixtures built
like captions_val2017.json (unsorted image ids, annotation ids out of file order, 5-7 captions
per image) and like Karpathy's dataset_coco.json (val2014 images assigned to test / val /
restval). The expected subsets are computed independently, the way pycocotools and
torchvision's CocoCaptions (Liang et al.) and CLIP_benchmark read the files."""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from clipgeo.sources.base import SourceError
from clipgeo.sources.protocols import PROTOCOLS, get_protocol, protocol_names


def _val2017_like(tmp_path, n_images=5012, seed=0):
    rng = random.Random(seed)
    ids = rng.sample(range(1, 600_000), n_images)        # COCO ids: sparse, listed unsorted
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640} for i in ids]
    anns = []
    next_id = 1
    for i in ids:
        for _ in range(rng.choice([5, 5, 5, 6, 7])):
            anns.append({"id": next_id, "image_id": i, "caption": f"caption {next_id} of image {i}"})
            next_id += 1
    rng.shuffle(anns)                                    # file order != annotation-id order
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    (tmp_path / "val2017").mkdir()
    return path, tmp_path / "val2017", images, anns


def _torchvision_cococaptions_first(images, anns, n):
    """What torchvision.datasets.CocoCaptions + caption_list[0] yields: ids sorted, pycocotools
    imgToAnns in file order, the first caption of each of the first n images."""
    img_to_anns = defaultdict(list)
    for a in anns:
        img_to_anns[a["image_id"]].append(a)
    ids = sorted(im["id"] for im in images)[:n]
    return [(str(i), str(img_to_anns[i][0]["id"]), img_to_anns[i][0]["caption"]) for i in ids]


def test_liang_gap_selects_the_first_5000_images_by_id_with_their_first_caption_in_file_order(tmp_path, home):
    from clipgeo.stages.ingest import ingest_coco, load_samples
    from clipgeo.store import catalog

    ann, img_dir, images, anns = _val2017_like(tmp_path)
    info = ingest_coco(home, ann, img_dir, protocol="liang-gap", check_images=False)
    assert (info.n_images, info.n_samples) == (5000, 5000)
    got = sorted((s.image_id, s.sample_id, s.caption) for s in load_samples(home, info.dataset_id))
    expected = sorted(_torchvision_cococaptions_first(images, anns, 5000))
    assert got == expected
    # the first caption in file order is not the smallest annotation id for most images: the rule matters
    smallest = {}
    for a in anns:
        smallest[a["image_id"]] = min(smallest.get(a["image_id"], 1 << 60), a["id"])
    assert sum(int(sid) != smallest[int(iid)] for iid, sid, _ in got) > 1000
    with catalog.session(home) as con:
        assert catalog.execute(con, "SELECT protocol, split FROM datasets WHERE dataset_id = ?",
                               [info.dataset_id]) == [("liang-gap", "val2017")]
    # without the protocol: every caption of every image, another dataset id
    plain = ingest_coco(home, ann, img_dir, check_images=False)
    assert plain.dataset_id != info.dataset_id and plain.n_samples == len(anns)


def _karpathy_like(tmp_path, seed=1):
    rng = random.Random(seed)
    ids = rng.sample(range(1, 600_000), 90)
    splits = {i: ("test" if k % 3 == 0 else "val" if k % 3 == 1 else "restval") for k, i in enumerate(ids)}
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in ids]
    anns, sent = [], 1
    for i in ids:
        for _ in range(rng.choice([5, 5, 6, 7])):
            anns.append({"id": sent, "image_id": i, "caption": f"a photo {sent}"})
            sent += 1
    rng.shuffle(anns)
    caps = tmp_path / "captions_val2014.json"
    caps.write_text(json.dumps({"images": images, "annotations": anns}))
    karpathy = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg", "imgid": k, "split": splits[i], "cocoid": i,
         "sentids": [], "sentences": []} for k, i in enumerate(ids)]}
    kfile = tmp_path / "dataset_coco.json"
    kfile.write_text(json.dumps(karpathy))
    (tmp_path / "val2014").mkdir()
    return caps, tmp_path / "val2014", kfile, splits, anns


def test_karpathy_5k_selects_the_test_split_with_all_captions(tmp_path, home):
    from clipgeo.stages.ingest import ingest_coco, load_samples

    caps, img_dir, kfile, splits, anns = _karpathy_like(tmp_path)
    info = ingest_coco(home, caps, img_dir, karpathy_split_file=kfile, protocol="karpathy-5k", check_images=False)
    got = sorted((s.image_id, s.sample_id) for s in load_samples(home, info.dataset_id))
    expected = sorted((str(a["image_id"]), str(a["id"])) for a in anns if splits[a["image_id"]] == "test")
    assert got == expected and info.n_images == sum(v == "test" for v in splits.values())
    from clipgeo.store import catalog

    with catalog.session(home) as con:
        assert catalog.execute(con, "SELECT protocol, split FROM datasets WHERE dataset_id = ?",
                               [info.dataset_id]) == [("karpathy-5k", "test")]


def test_protocols_refuse_inputs_that_would_select_another_subset(tmp_path, home):
    from clipgeo.stages.ingest import ingest_coco

    caps, img_dir, kfile, _, _ = _karpathy_like(tmp_path)
    with pytest.raises(SourceError, match="needs the Karpathy split file"):
        ingest_coco(home, caps, img_dir, protocol="karpathy-5k", check_images=False)
    with pytest.raises(SourceError, match="Karpathy test split"):
        ingest_coco(home, caps, img_dir, karpathy_split_file=kfile, split="val", protocol="karpathy-5k")
    with pytest.raises(SourceError, match="limit_images"):
        ingest_coco(home, caps, img_dir, protocol="liang-gap", limit_images=10)
    with pytest.raises(SourceError, match="unknown protocol"):
        get_protocol("liang")


def test_protocol_is_a_flow_parameter_and_cli_option_with_the_library_names():
    import typing

    from flows.cli import parse
    from flows.dataset import dataset_pipeline

    hint = typing.get_type_hints(dataset_pipeline.fn)["protocol"]
    literal = [a for a in typing.get_args(hint) if a is not type(None)][0]
    assert typing.get_args(literal) == protocol_names() == tuple(PROTOCOLS)
    _, bound = parse(["dataset", "coco", "captions_val2017.json", "--protocol", "liang-gap"])
    assert bound.arguments["protocol"] == "liang-gap"


def test_run_carries_its_datasets_protocol(home):
    from clipgeo.stages.measure import record_run_protocol
    from clipgeo.store import catalog

    with catalog.session(home) as con:
        catalog.insert(con, "datasets", [{"dataset_id": "d", "source": "coco", "split": "val2017", "protocol": "liang-gap"}])
        catalog.insert(con, "runs", [{"run_id": "r", "model_id": "m", "dataset_id": "d", "label": "x", "status": "embedded"}])
        record_run_protocol(con, "r")
        assert catalog.execute(con, "SELECT protocol FROM runs WHERE run_id = 'r'") == [("liang-gap",)]
