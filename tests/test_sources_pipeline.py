"""Each real source, written as a small fixture in its real format, through the
``clipgeo-dataset`` flow: ingest, embed (tiny model checkpoint), measure, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipgeo.core.config import DataHome
from clipgeo.store import catalog, vectors
from tests.conftest import make_prepared_home
from tests.test_sources_real import (  # noqa: F401  (fixtures)
    EXPECTED,
    FOLDER_ROWS,
    UNI,
    coco,
    folder,
    release,
    shards,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    _, _, ckpt = make_prepared_home(tmp_path_factory.mktemp("ckpt") / "home", n_train=48, n_val=8, steps=2)
    return ckpt


def _run(home: DataHome, **kw) -> dict:
    from flows.dataset import dataset_pipeline

    return dataset_pipeline(home=str(home.root), **kw)


def _samples(home: DataHome) -> list[tuple[str, str, str]]:
    with catalog.session(home, read_only=True) as con:
        return catalog.execute(con, "SELECT sample_id, image_id, caption FROM samples ORDER BY sample_id")


def _one_run(home: DataHome, summary: dict) -> str:
    assert len(summary["runs"]) == 1
    run_id = summary["runs"][0]["run_id"]
    with catalog.session(home, read_only=True) as con:
        assert catalog.execute(con, "SELECT status FROM runs WHERE run_id = ?", [run_id])[0][0] == "measured"
        assert catalog.execute(con, "SELECT count(*) FROM retrieval WHERE run_id = ?", [run_id])[0][0] == 6
    assert all(Path(p).exists() for p in summary["reports"])
    return run_id


def test_coco_with_karpathy_split(prefect_harness, coco, checkpoint, tmp_path):  # noqa: F811
    home = DataHome.resolve(tmp_path / "home")
    summary = _run(home, source="coco", path=str(coco["ann"]), image_dir=str(coco["img_dir"]),
                   models=[f"clipgeo-tiny-vit={checkpoint}"])
    run_id = _one_run(home, summary)
    want = sorted((str(a), str(cid), cap.strip()) for cid, caps in coco["captions"].items() for a, cap in caps)
    assert _samples(home) == want  # ids and captions unchanged, Unicode included
    assert vectors.count_rows(home, run_id) == {"image": 3, "text": 6}
    again = _run(home, source="coco", path=str(coco["ann"]), image_dir=str(coco["img_dir"]),
                 models=[f"clipgeo-tiny-vit={checkpoint}"], split="test+restval", karpathy_split_file=str(coco["split_file"]))
    assert again["runs"][0]["n_images"] == 2  # 391895 (test) + 522418 (restval)


def test_folder_with_a_bad_image(prefect_harness, folder, checkpoint, tmp_path):  # noqa: F811
    (folder / "dogs" / "broken.jpg").write_bytes(b"")  # zero-byte file: rejected at ingest
    rows = [{"image": img, "captions": caps} for img, caps in FOLDER_ROWS] + [{"image": "dogs/broken.jpg", "captions": ["x"]}]
    cap_file = tmp_path / "captions.jsonl"
    cap_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    home = DataHome.resolve(tmp_path / "home")
    summary = _run(home, source="folder", path=str(cap_file), image_dir=str(folder), models=[f"clipgeo-tiny-vit={checkpoint}"])
    run_id = _one_run(home, summary)
    assert _samples(home) == sorted(EXPECTED)
    assert vectors.count_rows(home, run_id) == {"image": 3, "text": 5}  # the broken image and its caption left out
    with catalog.session(home, read_only=True) as con:
        rejects = catalog.execute(con, "SELECT run_id, stage, reason, image_id, n_images, n_captions FROM rejects")
    assert rejects == [(None, "read", "zero-byte file", "dogs/broken.jpg", 1, 1)]  # one row, the dataset's


def test_webdataset_shards(prefect_harness, shards, checkpoint, tmp_path):  # noqa: F811
    home = DataHome.resolve(tmp_path / "home")
    summary = _run(home, source="webdataset", path=str(shards / "{00000..00001}.tar"),
                   models=[f"clipgeo-tiny-vit={checkpoint}"])
    run_id = _one_run(home, summary)
    samples = _samples(home)
    assert [s[0] for s in samples] == ["000000000", "000000001", "000000002", "000010000", "000010001"]
    assert samples[1][2] == UNI
    assert vectors.count_rows(home, run_id) == {"image": 5, "text": 5}


def test_imported_embeddings_are_marked_normalised(prefect_harness, release, tmp_path):  # noqa: F811
    home = DataHome.resolve(tmp_path / "home")
    summary = _run(home, source="embeddings", path=str(release["root"]))
    run_id = _one_run(home, summary)
    rv = vectors.read_run(home, run_id)
    p0, p1 = release["parts"]
    np.testing.assert_allclose(rv.images, np.concatenate([p0["img"].astype(np.float32), p1["img"]]), rtol=1e-6)
    with catalog.session(home, read_only=True) as con:
        assert catalog.execute(con, "SELECT vectors_normalized FROM runs")[0][0] is True
        assert catalog.execute(con, "SELECT gap_raw FROM modality_gap")[0][0] is None
        assert catalog.execute(con, "SELECT count(*) FROM separability WHERE vectors = 'raw'")[0][0] == 0
        caps = [c for (c,) in catalog.execute(con, "SELECT caption FROM samples ORDER BY sample_id")]
    assert UNI in caps
