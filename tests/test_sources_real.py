"""Every real-data source read from a small fixture written in that source's real on-disk format.

Checks counts, ids, that captions survive unchanged (Unicode included) and that every image
ref a source hands out opens with :func:`clipgeo.sources.images.load_image`.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipgeo.sources import (
    SourceError,
    SourceRead,
    detect_normalized,
    expand_braces,
    iter_embedding_chunks,
    load_image,
    read_coco,
    read_coco_captions,
    read_folder,
    read_karpathy,
    read_webdataset,
)
from clipgeo.sources.images import parse_ref, tar_index

UNI = "Ünïcödé 🐈 caption — 猫"


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _webp(colour: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def _all_load(read: SourceRead) -> None:
    for ref in {s.image_ref for s in read.samples}:
        im = load_image(ref)
        assert im.mode == "RGB" and im.size[0] > 0


# --------------------------------------------------------------------------- COCO + Karpathy


@pytest.fixture()
def coco(tmp_path: Path) -> dict:
    img_dir = tmp_path / "val2014"
    img_dir.mkdir()
    names = {
        391895: "COCO_val2014_000000391895.jpg",
        522418: "COCO_val2014_000000522418.jpg",
        184613: "COCO_val2014_000000184613.jpg",
    }
    for i, name in enumerate(names.values()):
        (img_dir / name).write_bytes(_jpeg((40 * i, 80, 120)))
    captions = {
        391895: [(770337, "A man with a red helmet on a small moped on a dirt road. "),
                 (771687, "Man riding a motor bike on a dirt road on the countryside."),
                 (772707, UNI)],
        522418: [(681330, "A woman wearing a net on her head cutting a cake. "),
                 (686718, "A woman cutting a large white sheet cake.")],
        184613: [(2, "A child holding a flowered umbrella and petting a yak.")],
    }
    data = {
        "info": {"description": "COCO 2014 Dataset"},
        "licenses": [],
        "images": [{"license": 3, "file_name": n, "coco_url": "http://x", "height": 16, "width": 24,
                    "date_captured": "2013-11-14 11:18:45", "flickr_url": "http://y", "id": cid}
                   for cid, n in names.items()],
        "annotations": [{"image_id": cid, "id": aid, "caption": cap}
                        for cid, caps in captions.items() for aid, cap in caps],
    }
    ann_dir = tmp_path / "annotations"
    ann_dir.mkdir()
    ann = ann_dir / "captions_val2014.json"
    ann.write_text(json.dumps(data), encoding="utf-8")  # ensure_ascii: \u escapes, as COCO ships
    split_of = {391895: "test", 522418: "restval", 184613: "val"}
    karpathy = {
        "dataset": "coco",
        "images": [
            {"filepath": "val2014", "sentids": [a for a, _ in captions[cid]], "filename": n,
             "imgid": k, "split": split_of[cid], "cocoid": cid,
             "sentences": [{"tokens": c.lower().split(), "raw": c, "imgid": k, "sentid": a}
                           for a, c in captions[cid]]}
            for k, (cid, n) in enumerate(names.items())
        ],
    }
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(json.dumps(karpathy, ensure_ascii=False), encoding="utf-8")
    return {"ann": ann, "img_dir": img_dir, "split_file": split_file, "captions": captions, "names": names}


def test_coco_full(coco: dict) -> None:
    read = read_coco(coco["ann"], coco["img_dir"])
    assert read.rejects == []
    assert len(read.samples) == 6 and len({s.image_id for s in read.samples}) == 3
    assert [s.sample_id for s in read.samples] == ["2", "770337", "771687", "772707", "681330", "686718"]
    by_id = {s.sample_id: s for s in read.samples}
    assert by_id["772707"].caption == UNI
    assert by_id["770337"].caption == "A man with a red helmet on a small moped on a dirt road."
    assert by_id["770337"].image_id == "391895"
    assert by_id["770337"].image_ref == str((coco["img_dir"] / coco["names"][391895]).resolve())
    assert read.samples == read_coco_captions(coco["ann"], coco["img_dir"])  # same samples as before
    _all_load(read)


@pytest.mark.parametrize(
    ("split", "image_ids"),
    [("test", {"391895"}), ("val", {"184613"}), ("restval", {"522418"}),
     ("train+restval", {"522418"}), ("test+val", {"391895", "184613"})],
)
def test_coco_karpathy_split(coco: dict, split: str, image_ids: set[str]) -> None:
    read = read_coco(coco["ann"], coco["img_dir"], karpathy_split_file=coco["split_file"], split=split)
    assert {s.image_id for s in read.samples} == image_ids
    n = sum(len(coco["captions"][int(i)]) for i in image_ids)
    assert len(read.samples) == n and read.rejects == []


def test_coco_karpathy_errors(coco: dict, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="go together"):
        read_coco(coco["ann"], coco["img_dir"], split="test")
    with pytest.raises(SourceError, match="unknown Karpathy split"):
        read_coco(coco["ann"], coco["img_dir"], karpathy_split_file=coco["split_file"], split="dev")
    with pytest.raises(SourceError, match="Karpathy split file not found"):
        read_coco(coco["ann"], coco["img_dir"], karpathy_split_file=tmp_path / "nope.json", split="test")
    # a split with no image in this captions file names the likely mistake
    only_train = json.loads(coco["split_file"].read_text())
    for im in only_train["images"]:
        im["split"] = "train"
    other = tmp_path / "train_only.json"
    other.write_text(json.dumps(only_train))
    with pytest.raises(SourceError, match="none of its 3 images"):
        read_coco(coco["ann"], coco["img_dir"], karpathy_split_file=other, split="test")


def test_karpathy_own_captions(coco: dict) -> None:
    read = read_karpathy(coco["split_file"], coco["img_dir"].parent, split="test")
    assert [s.sample_id for s in read.samples] == ["770337", "771687", "772707"]
    assert {s.image_id for s in read.samples} == {"391895"}
    assert read.samples[2].caption == UNI
    _all_load(read)


# --------------------------------------------------------------------------- folder


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "1.jpg").write_bytes(_jpeg((200, 10, 10)))
    (root / "cats" / "ü 2.png").write_bytes(_png((10, 200, 10)))
    (root / "dogs" / "7.webp").write_bytes(_webp((10, 10, 200)))
    return root


# (image, [captions]) in file order; the expected ids follow from it
FOLDER_ROWS = [
    ("cats/1.jpg", ["a red cat", UNI]),
    ("cats/ü 2.png", ["a green cat, \"quoted\", with commas"]),
    ("dogs/7.webp", ["a blue dog\non two lines", "  padded  "]),
]
EXPECTED = [
    ("cats/1.jpg#0", "cats/1.jpg", "a red cat"),
    ("cats/1.jpg#1", "cats/1.jpg", UNI),
    ("cats/ü 2.png#0", "cats/ü 2.png", "a green cat, \"quoted\", with commas"),
    ("dogs/7.webp#0", "dogs/7.webp", "a blue dog\non two lines"),
    ("dogs/7.webp#1", "dogs/7.webp", "padded"),
]


def _check_folder(read: SourceRead, root: Path) -> None:
    assert read.rejects == []
    assert [(s.sample_id, s.image_id, s.caption) for s in read.samples] == EXPECTED
    assert read.samples[0].image_ref == str((root / "cats" / "1.jpg").resolve())
    _all_load(read)


def test_folder_csv_one_caption_per_row(folder: Path, tmp_path: Path) -> None:
    import csv

    f = tmp_path / "captions.csv"
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        for img, caps in FOLDER_ROWS:
            for c in caps:
                w.writerow([img, c])
    _check_folder(read_folder(folder, f), folder)


def test_folder_csv_list_cell_and_other_names(folder: Path, tmp_path: Path) -> None:
    import csv

    f = tmp_path / "captions.csv"
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "captions", "width"])
        for img, caps in FOLDER_ROWS:
            w.writerow(["./" + img, json.dumps(caps, ensure_ascii=False), 10])
    _check_folder(read_folder(folder, f), folder)


def test_folder_jsonl(folder: Path, tmp_path: Path) -> None:
    f = tmp_path / "captions.jsonl"
    with f.open("w", encoding="utf-8") as fh:
        for img, caps in FOLDER_ROWS:  # a list for one row, a plain caption per row for the others
            if len(caps) == 2 and img.startswith("cats"):
                fh.write(json.dumps({"path": img, "text": caps}, ensure_ascii=False) + "\n")
            else:
                for c in caps:
                    fh.write(json.dumps({"path": img, "text": c}) + "\n")
    _check_folder(read_folder(folder, f), folder)


def test_folder_parquet(folder: Path, tmp_path: Path) -> None:
    import polars as pl

    f = tmp_path / "captions.parquet"
    pl.DataFrame({"image": [r[0] for r in FOLDER_ROWS], "captions": [r[1] for r in FOLDER_ROWS]}).write_parquet(f)
    _check_folder(read_folder(folder, f), folder)
    g = tmp_path / "flat.parquet"  # one caption per row, string column
    pq.write_table(pa.table({"image": [i for i, cs in FOLDER_ROWS for _ in cs],
                             "caption": [c for _, cs in FOLDER_ROWS for c in cs]}), g)
    _check_folder(read_folder(folder, g), folder)


def test_folder_sample_id_column_and_explicit_columns(folder: Path, tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    rows = [{"sample_id": "s1", "img": "cats/1.jpg", "desc": "one"},
            {"sample_id": "s2", "img": "dogs/7.webp", "desc": UNI}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(SourceError, match="cannot find the image column"):
        read_folder(folder, f)
    read = read_folder(folder, f, image_column="img", caption_column="desc")
    assert [(s.sample_id, s.image_id, s.caption) for s in read.samples] == [
        ("s1", "cats/1.jpg", "one"), ("s2", "dogs/7.webp", UNI)]


def test_folder_unreadable_source(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="captions file not found"):
        read_folder(folder, tmp_path / "none.csv")
    with pytest.raises(SourceError, match="image folder not found"):
        read_folder(tmp_path / "none", tmp_path / "none.csv")
    bad = tmp_path / "c.txt"
    bad.write_text("x")
    with pytest.raises(SourceError, match="unknown captions file type"):
        read_folder(folder, bad)
    junk = tmp_path / "c.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"c\.parquet.*not a readable parquet"):
        read_folder(folder, junk)


# --------------------------------------------------------------------------- webdataset


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[str, bytes, str, str | bytes | None]], *, order: str = "img") -> None:
    """A shard in img2dataset's layout: per key the image, ``.txt`` and ``.json`` members."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for key, img, ext, caption in samples:
            meta = {"url": f"http://example.com/{key}.{ext}", "key": key, "status": "success",
                    "error_message": None, "width": 24, "height": 16, "original_width": 240,
                    "original_height": 160, "exif": None, "sha256": "0" * 64}
            txt = caption.encode("utf-8") if isinstance(caption, str) else caption
            if isinstance(caption, str):
                meta["caption"] = caption
            members = [(f"{key}.{ext}", img), (f"{key}.json", json.dumps(meta).encode())]
            if txt is not None:
                members.insert(1, (f"{key}.txt", txt))
            if order == "sorted":
                members.sort()
            for name, data in members:
                _add(tf, name, data)


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "00000.tar", [
        ("000000000", _jpeg((255, 0, 0)), "jpg", "a red square"),
        ("000000001", _png((0, 255, 0)), "png", UNI),
        ("000000002", _webp((0, 0, 255)), "webp", "  a blue one\n"),
    ])
    write_shard(d / "00001.tar", [
        ("000010000", _jpeg((9, 9, 9), (32, 48)), "jpg", "a dark photo"),
        ("000010001", _jpeg((200, 200, 200)), "jpg", "a grey photo"),
    ], order="sorted")
    # img2dataset's sidecar files, not matched by the pattern
    pq.write_table(pa.table({"key": ["000000000"], "caption": ["x"]}), d / "00000.parquet")
    (d / "00000_stats.json").write_text("{}")
    return d


def test_brace_expansion() -> None:
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{train,val}/{0..1}.tar") == ["train/0.tar", "train/1.tar", "val/0.tar", "val/1.tar"]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"]
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("{0..10..5}") == ["0", "5", "10"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("lit{x}.tar") == ["lit{x}.tar"]


def test_webdataset(shards: Path) -> None:
    read = read_webdataset(str(shards / "{00000..00001}.tar"))
    assert read.rejects == []
    keys = ["000000000", "000000001", "000000002", "000010000", "000010001"]
    assert [s.sample_id for s in read.samples] == keys
    assert [s.image_id for s in read.samples] == keys
    assert [s.caption for s in read.samples] == ["a red square", UNI, "a blue one", "a dark photo", "a grey photo"]
    tar0 = str((shards / "00000.tar").resolve())
    assert read.samples[0].image_ref == f"tar://{tar0}#000000000.jpg"
    assert read.samples[2].image_ref == f"tar://{tar0}#000000002.webp"
    assert load_image(read.samples[0].image_ref).getpixel((3, 3))[0] > 240
    assert load_image(read.samples[3].image_ref).size == (32, 48)
    _all_load(read)
    # the shard index is cached once and has every member
    assert set(tar_index(parse_ref(read.samples[0].image_ref)[0])) >= {"000000000.jpg", "000000000.txt"}
    # the same through a list and through '::'
    same = read_webdataset([str(shards / "00000.tar"), str(shards / "00001.tar")])
    assert same.samples == read.samples
    assert read_webdataset(f"{shards / '00000.tar'}::{shards / '00001.tar'}").samples == read.samples


def test_tar_members_read_by_cached_offsets(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipgeo.sources import images

    scans: list[str] = []
    real_scan = images._scan_tar
    monkeypatch.setattr(images, "_scan_tar", lambda path: scans.append(path) or real_scan(path))
    read = read_webdataset(str(shards / "{00000..00001}.tar"))
    for s in read.samples:  # the reader primed the index: no scan at all
        load_image(s.image_ref)
    assert scans == []
    images._index_cache.clear()  # a fresh process: one scan per tar, however many members
    for s in read.samples * 3:
        load_image(s.image_ref)
    assert sorted(scans) == sorted(str((shards / f"0000{k}.tar").resolve()) for k in (0, 1))


def test_webdataset_caption_from_json_when_no_txt(tmp_path: Path) -> None:
    write_shard(tmp_path / "0.tar", [("k1", _jpeg((1, 2, 3)), "jpg", None)])
    # no caption anywhere: rejected
    read = read_webdataset(str(tmp_path / "0.tar"))
    assert read.samples == [] and [(r.stage, r.reason, r.sample_id) for r in read.rejects] == [
        ("caption", "no caption", "k1")]
    with tarfile.open(tmp_path / "1.tar", "w") as tf:
        _add(tf, "k2.jpg", _jpeg((1, 2, 3)))
        _add(tf, "k2.json", json.dumps({"key": "k2", "caption": UNI}, ensure_ascii=False).encode())
    read = read_webdataset(str(tmp_path / "1.tar"))
    assert [(s.sample_id, s.caption) for s in read.samples] == [("k2", UNI)]


def test_webdataset_unreadable(tmp_path: Path, shards: Path) -> None:
    with pytest.raises(SourceError, match=r"shard not found: .*00002\.tar.*00005\.tar \(4 of 6 shards"):
        read_webdataset(str(shards / "{00000..00005}.tar"))
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(SourceError, match=r"bad\.tar.*not a readable tar"):
        read_webdataset(str(tmp_path / "bad.tar"))
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.tar"):
        read_webdataset(str(tmp_path / "empty.tar"))


# --------------------------------------------------------------------------- embeddings


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_release(root: Path, parts: list[dict]) -> None:
    """The clip-retrieval / LAION layout. Each part: img, txt arrays and optional metadata table."""
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(parts):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", p["img"])
        np.save(root / "text_emb" / f"text_emb_{i}.npy", p["txt"])
        if p.get("meta") is not None:
            pq.write_table(pa.table(p["meta"]), root / "metadata" / f"metadata_{i}.parquet")


@pytest.fixture()
def release(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    d = 16
    p0 = {"img": _unit(rng, 5, d).astype(np.float16), "txt": _unit(rng, 5, d).astype(np.float16),
          "meta": {"url": [f"http://x/{k}.jpg" for k in range(5)], "caption": ["c0", UNI, "c2", "", "c4"],
                   "key": [f"00000{k:04d}" for k in range(5)], "similarity": [0.3] * 5}}
    p1 = {"img": _unit(rng, 3, d).astype(np.float32), "txt": _unit(rng, 3, d).astype(np.float32),
          "meta": {"url": [f"http://y/{k}.jpg" for k in range(3)], "caption": ["d0", "d1", "d2"],
                   "key": [f"00001{k:04d}" for k in range(3)]}}
    root = tmp_path / "laion"
    write_release(root, [p0, p1])
    return {"root": root, "parts": [p0, p1], "d": d}


@pytest.mark.parametrize("chunk_rows", [1, 2, 4, 65536])
def test_embeddings_stream(release: dict, chunk_rows: int) -> None:
    chunks = list(iter_embedding_chunks(release["root"], chunk_rows=chunk_rows))
    assert all(len(c) <= chunk_rows for c in chunks)
    assert all(c.rejects == [] for c in chunks)
    ids = [s for c in chunks for s in c.sample_ids]
    assert ids == [f"00000{k:04d}" for k in range(5)] + [f"00001{k:04d}" for k in range(3)]
    assert [s for c in chunks for s in c.image_ids] == ids
    assert [x for c in chunks for x in c.captions] == ["c0", UNI, "c2", "", "c4", "d0", "d1", "d2"]
    assert [x for c in chunks for x in c.urls][5] == "http://y/0.jpg"
    img = np.concatenate([c.img for c in chunks])
    txt = np.concatenate([c.txt for c in chunks])
    assert img.dtype == np.float32 and txt.dtype == np.float32 and img.shape == (8, release["d"])
    p0, p1 = release["parts"]
    np.testing.assert_array_equal(img, np.concatenate([p0["img"].astype(np.float32), p1["img"]]))
    np.testing.assert_array_equal(txt, np.concatenate([p0["txt"].astype(np.float32), p1["txt"]]))
    assert [int(r) for c in chunks for r in c.rows] == [0, 1, 2, 3, 4, 0, 1, 2]
    samples = [s for c in chunks for s in c.samples()]
    assert samples[1].caption == UNI and samples[1].image_ref == "http://x/1.jpg"


def test_embeddings_normalisation_detected(release: dict, tmp_path: Path) -> None:
    assert detect_normalized(release["root"]) is True
    assert detect_normalized(release["root"], sample_rows=3) is True
    rng = np.random.default_rng(1)
    raw = tmp_path / "raw"
    write_release(raw, [{"img": (3 * rng.standard_normal((50, 8))).astype(np.float32),
                         "txt": rng.standard_normal((50, 8)).astype(np.float32), "meta": None}])
    assert detect_normalized(raw) is False


def test_embeddings_without_metadata_use_row_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "r"
    (root / "img_emb").mkdir(parents=True)
    (root / "text_emb").mkdir()
    for i in (0, 1):  # zero-padded part numbers, as some releases write them
        np.save(root / "img_emb" / f"img_emb_{i:04d}.npy", _unit(rng, 2, 4).astype(np.float16))
        np.save(root / "text_emb" / f"text_emb_{i:04d}.npy", _unit(rng, 2, 4).astype(np.float16))
    chunks = list(iter_embedding_chunks(root))
    assert [s for c in chunks for s in c.sample_ids] == ["0:0", "0:1", "1:0", "1:1"]
    assert all(c.captions is None for c in chunks)


def test_embeddings_unreadable_root(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="embeddings folder not found"):
        list(iter_embedding_chunks(tmp_path / "none"))
    (tmp_path / "x").mkdir()
    with pytest.raises(SourceError, match=r"no img_emb/img_emb_<i>\.npy"):
        list(iter_embedding_chunks(tmp_path / "x"))
