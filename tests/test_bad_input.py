"""Bad input, built as files on disk: each case either loads correctly or is refused with its reason.

Images go through :func:`clipgeo.sources.images.load_image` (what the embed stage uses) and the
pre-scan :func:`clipgeo.stages.ingest.drop_bad_images`; captions, ids and vectors through the sources' rejects.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from clipgeo.sources import (
    ImageRejected,
    Sample,
    SourceRead,
    check_image,
    iter_embedding_chunks,
    load_image,
    read_coco,
    read_folder,
    read_webdataset,
)
from clipgeo.sources.images import DEFAULT_MAX_PIXELS, tar_ref
from clipgeo.stages.ingest import drop_bad_images

LONG = ("a very long caption " * 500)[:9_999] + "."  # 10,000 characters, no outer whitespace


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


def _noise(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, w: int, h: int) -> None:
    """A *valid* w x h 1-bit black PNG, streamed through zlib (20000 x 20000 is ~50 KB, <1 s)."""
    row = b"\x00" + b"\x00" * ((w + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def _rejected(ref: str, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as info:
        load_image(ref, **kw)
    return info.value


# --------------------------------------------------------------------------- images: refused


def test_truncated_jpeg_is_refused_not_padded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _jpeg_bytes(_noise((200, 150)))
    for frac in (0.3, 0.6, 0.95):
        p = tmp_path / f"cut{frac}.jpg"
        p.write_bytes(data[: int(len(data) * frac)])
        err = _rejected(str(p))
        assert (err.reason, err.stage) == ("truncated image", "decode"), frac
        assert check_image(str(p)) == "truncated image"
    # even when some other code enabled Pillow's "load truncated images" globally
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert _rejected(str(tmp_path / "cut0.6.jpg")).reason == "truncated image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_zero_byte_missing_and_text_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    err = _rejected(str(tmp_path / "empty.jpg"))
    assert (err.reason, err.stage) == ("zero-byte file", "read")
    err = _rejected(str(tmp_path / "missing.jpg"))
    assert (err.reason, err.stage) == ("missing file", "read")
    (tmp_path / "notes.jpg").write_text("this is a text file, not a JPEG\n" * 20)
    err = _rejected(str(tmp_path / "notes.jpg"))
    assert (err.reason, err.stage) == ("not an image (cannot identify)", "decode")
    (tmp_path / "adir.jpg").mkdir()
    assert _rejected(str(tmp_path / "adir.jpg")).reason.startswith("unreadable file")
    assert isinstance(err, ValueError)


def test_decompression_bombs(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    huge_png(bomb, 20000, 20000)
    assert bomb.stat().st_size < 1_000_000
    err = _rejected(str(bomb))
    assert err.reason == f"decompression bomb: 400000000 pixels > limit {DEFAULT_MAX_PIXELS}"
    # above our 100 MP default but below Pillow's own hard limit (179 MP): our guard refuses it
    mid = tmp_path / "mid.png"
    huge_png(mid, 12000, 11000)
    assert _rejected(str(mid)).reason == f"decompression bomb: 132000000 pixels > limit {DEFAULT_MAX_PIXELS}"
    assert check_image(str(mid), decode=False).startswith("decompression bomb")
    # a configurable limit: an ordinary image over a small limit is refused, under it loads
    small = tmp_path / "small.png"
    _noise((300, 200)).save(small)
    assert _rejected(str(small), max_pixels=50_000).reason == "decompression bomb: 60000 pixels > limit 50000"
    assert load_image(str(small), max_pixels=60_000).size == (300, 200)


def test_truncated_and_missing_tar_members(tmp_path: Path) -> None:
    good = _jpeg_bytes(_noise((80, 60), 1))
    tar = tmp_path / "s.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in (("k0.jpg", good), ("k0.txt", b"ok"), ("k1.jpg", good), ("k1.txt", b"cut")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    whole = tar.read_bytes()
    assert load_image(tar_ref(str(tar), "k0.jpg")).size == (80, 60)
    assert _rejected(tar_ref(str(tar), "nope.jpg")).reason == "missing tar member"
    assert _rejected(tar_ref(str(tmp_path / "none.tar"), "k0.jpg")).reason == "missing file"
    # a shard cut inside k1.jpg: k0 is kept, the shard gets a reject, k1's image is truncated
    start_k1 = whole.index(good, whole.index(good) + len(good))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: start_k1 + len(good) // 2])
    read = read_webdataset(str(cut))
    assert [s.sample_id for s in read.samples] == ["k0"]
    # the shard is recorded as cut short; k1 (header read, caption never reached) has no caption
    assert [(r.item_ref, r.stage, r.sample_id) for r in read.rejects] == [
        (str(cut), "read", None), (tar_ref(str(cut), "k1.jpg"), "caption", "k1")]
    assert read.rejects[0].reason.startswith("tar truncated after 3 members")
    assert _rejected(tar_ref(str(cut), "k1.jpg")).reason == "truncated image"


# --------------------------------------------------------------------------- images: loaded correctly


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(p, "JPEG", quality=95)  # red in CMYK
    assert Image.open(p).mode == "CMYK"
    im = load_image(str(p))
    assert im.mode == "RGB" and im.size == (40, 30)
    r, g, b = im.getpixel((20, 15))
    assert r > 230 and g < 30 and b < 30


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.zeros((10, 30), dtype=np.uint16)
    arr[:, 10:20] = 32768
    arr[:, 20:] = 65535
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    im = load_image(str(p))
    assert im.mode == "RGB" and im.size == (30, 10)
    assert im.getpixel((5, 5)) == (0, 0, 0)
    assert im.getpixel((15, 5)) == (128, 128, 128)  # clipping would give 255
    assert im.getpixel((25, 5)) == (255, 255, 255)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (20, 10), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.paste(1, (10, 0, 20, 10))  # right half red, left half index 0 = transparent black
    p = tmp_path / "pal.png"
    im.save(p, transparency=0)
    assert Image.open(p).mode == "P" and "transparency" in Image.open(p).info
    out = load_image(str(p))
    assert out.mode == "RGB"
    assert out.getpixel((2, 5)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((15, 5)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(tmp_path: Path, mode: str) -> None:
    colour = (200, 0, 0, 128) if mode == "RGBA" else (0, 128)
    p = tmp_path / f"{mode}.png"
    Image.new(mode, (8, 8), colour).save(p)
    px = load_image(str(p)).getpixel((4, 4))
    expect = (228, 127, 127) if mode == "RGBA" else (127, 127, 127)
    assert all(abs(a - b) <= 2 for a, b in zip(px, expect)), px


def test_exif_rotated_jpeg_is_upright(tmp_path: Path) -> None:
    # stored 60 wide x 30 high: left half red, right half blue; EXIF orientation 6 says
    # "rotate 90 degrees clockwise to display", so the upright image is 30 x 60, red on top
    arr = np.zeros((30, 60, 3), dtype=np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(p, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(p).size == (60, 30)
    im = load_image(str(p))
    assert im.size == (30, 60)
    top, bottom = im.getpixel((15, 10)), im.getpixel((15, 50))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_prescan_moves_bad_images_to_rejects(tmp_path: Path) -> None:
    _noise().save(tmp_path / "ok.jpg")
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    samples = [
        Sample("1", "ok", str(tmp_path / "ok.jpg"), "a"),
        Sample("2", "zero", str(tmp_path / "zero.jpg"), "b"),
        Sample("3", "text", str(tmp_path / "text.jpg"), "c"),
        Sample("4", "gone", str(tmp_path / "gone.jpg"), "d"),
        Sample("5", "ok", str(tmp_path / "ok.jpg"), "e"),
    ]
    out = drop_bad_images(SourceRead(samples, []), workers=2)
    assert [s.sample_id for s in out.samples] == ["1", "5"]
    # one reject per bad image file (not per caption), naming the image and how many captions it took
    assert sorted((r.image_id, r.stage, r.reason, r.n_captions) for r in out.rejects) == [
        ("gone", "read", "missing file", 1),
        ("text", "decode", "not an image (cannot identify)", 1),
        ("zero", "read", "zero-byte file", 1),
    ]


# --------------------------------------------------------------------------- captions and ids


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_caption_cases_and_duplicates(tmp_path: Path) -> None:
    jpg = _jpeg_bytes(_noise((16, 16)))
    _tar(tmp_path / "00000.tar", [
        ("a.jpg", jpg), ("a.txt", b"fine caption"),
        ("b.jpg", jpg), ("b.txt", b""),
        ("c.jpg", jpg), ("c.txt", b" \t\n "),
        ("d.jpg", jpg), ("d.txt", b"caf\xe9 au lait"),          # Latin-1, not UTF-8
        ("e.jpg", jpg), ("e.txt", LONG.encode()),
        ("f.txt", b"caption without image"), ("f.json", b"{}"),
    ])
    _tar(tmp_path / "00001.tar", [
        ("a.jpg", jpg), ("a.txt", b"same key in the next shard"),
        ("g.png", jpg), ("g.txt", "ok ✓".encode()),
    ])
    read = read_webdataset(str(tmp_path / "{00000..00001}.tar"))
    assert [(s.sample_id, len(s.caption)) for s in read.samples] == [("a", 12), ("e", 10_000), ("g", 4)]
    assert read.samples[1].caption == LONG  # kept whole
    got = {(r.sample_id, r.stage, r.reason) for r in read.rejects}
    assert got == {
        ("b", "caption", "empty caption"),
        ("c", "caption", "empty caption"),
        ("d", "caption", "caption not valid UTF-8 (byte 0xe9 at offset 3)"),
        ("f", "read", "no image member"),
        ("a", "read", "duplicate sample id"),
    }
    dup = next(r for r in read.rejects if r.reason == "duplicate sample id")
    assert "00001.tar#a.jpg" in dup.item_ref


def test_folder_caption_cases_and_duplicates(tmp_path: Path) -> None:
    rows = [("1.jpg", "ok"), ("2.jpg", ""), ("3.jpg", "   "), ("4.jpg", LONG), ("", "no image")]
    f = tmp_path / "c.csv"
    with f.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    with f.open("ab") as fh:
        fh.write(b"5.jpg,bad \xff\xfe bytes\n")
    read = read_folder(tmp_path, f)
    assert [(s.sample_id, s.caption) for s in read.samples] == [("1.jpg#0", "ok"), ("4.jpg#0", LONG)]
    assert [(r.item_ref.rsplit(":", 1)[1], r.stage, r.reason) for r in read.rejects] == [
        ("3", "caption", "empty caption"),
        ("4", "caption", "empty caption"),
        ("6", "read", "no image path in column 'image'"),
        ("7", "caption", "caption not valid UTF-8 (byte 0xff at offset 4)"),
    ]
    # jsonl: invalid UTF-8 line, malformed line, duplicate sample ids (first kept)
    g = tmp_path / "c.jsonl"
    g.write_bytes(b'{"sample_id": "x", "image": "1.jpg", "caption": "first"}\n'
                  b'{"sample_id": "x", "image": "2.jpg", "caption": "second"}\n'
                  b'{"sample_id": "y", "image": "3.jpg", "caption": "caf\xe9"}\n'
                  b'{"sample_id": "z", "image": "4.jpg", \n'
                  b'{"sample_id": "w", "image": "5.jpg", "caption": null}\n')
    read = read_folder(tmp_path, g)
    assert [(s.sample_id, s.caption) for s in read.samples] == [("x", "first")]
    assert [(r.stage, r.reason.split(":")[0], r.sample_id) for r in read.rejects] == [
        ("caption", "caption not valid UTF-8 (byte 0xe9 at offset 3)", "y"),
        ("read", "malformed JSON line", None),
        ("caption", "no caption", "w"),
        ("read", "duplicate sample id", "x"),
    ]


def test_coco_caption_cases_and_duplicates(tmp_path: Path) -> None:
    data = {"images": [{"id": 1, "file_name": "1.jpg"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "ok"},
                            {"id": 11, "image_id": 1, "caption": " \n "},
                            {"id": 10, "image_id": 1, "caption": "duplicate id"},
                            {"id": 12, "image_id": 1, "caption": "bad \ud800 surrogate"},
                            {"id": 13, "image_id": 1, "caption": LONG}]}
    ann = tmp_path / "captions_val2017.json"
    ann.write_text(json.dumps(data))  # the lone surrogate is written as a \ud800 escape
    read = read_coco(ann, tmp_path)
    assert [(s.sample_id, len(s.caption)) for s in read.samples] == [("10", 2), ("13", 10_000)]
    assert [(r.sample_id, r.stage, r.reason) for r in read.rejects] == [
        ("11", "caption", "empty caption"),
        ("10", "read", "duplicate sample id"),
        ("12", "caption", "caption not valid UTF-8 (lone surrogate at offset 4)"),
    ]


# --------------------------------------------------------------------------- imported vectors


def _release(root: Path, parts: list[tuple[np.ndarray, np.ndarray, dict | None]]) -> None:
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (img, txt, meta) in enumerate(parts):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", img)
        if txt is not None:
            np.save(root / "text_emb" / f"text_emb_{i}.npy", txt)
        if meta is not None:
            pq.write_table(pa.table(meta), root / "metadata" / f"metadata_{i}.parquet")


def _meta(prefix: str, n: int) -> dict:
    return {"key": [f"{prefix}{k}" for k in range(n)], "caption": [f"cap {prefix}{k}" for k in range(n)]}


def test_embedding_part_and_row_rejects(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def vec(n: int, d: int = 8, dt=np.float16) -> np.ndarray:
        return rng.standard_normal((n, d)).astype(dt)

    bad_rows = vec(5, dt=np.float32)
    bad_rows[1, 3] = np.nan
    bad_txt = vec(5, dt=np.float32)
    bad_txt[3, 0] = np.inf
    bad_rows[4] = 0.0
    root = tmp_path / "rel"
    _release(root, [
        (vec(4), vec(4), _meta("a", 4)),                  # 0: fine
        (vec(5), vec(5), _meta("b", 4)),                  # 1: metadata has 4 rows, npy 5
        (vec(3), vec(2), _meta("c", 3)),                  # 2: img / text row counts differ
        (bad_rows, bad_txt, _meta("d", 5)),               # 3: NaN, inf and zero rows
        (vec(2, d=4), vec(2, d=4), _meta("e", 2)),        # 4: other dimension
        (vec(2), None, _meta("f", 2)),                    # 5: no text_emb
        (vec(3), vec(3), {"key": ["a0", "g1", "g2"], "caption": ["x", "y", "z"]}),  # 6: dup key
    ])
    (root / "img_emb" / "img_emb_7.npy").write_bytes(b"garbage, not npy")  # 7: unreadable
    np.save(root / "text_emb" / "text_emb_7.npy", vec(1))
    chunks = list(iter_embedding_chunks(root, chunk_rows=2))
    ids = [s for c in chunks for s in c.sample_ids]
    assert ids == ["a0", "a1", "a2", "a3", "d0", "d2", "g1", "g2"]
    rejects = [r for c in chunks for r in c.rejects]
    got = [(r.stage, r.reason, r.sample_id, Path(r.item_ref.split("#")[0]).name) for r in rejects]
    assert got == [
        ("read", "metadata_1.parquet has 4 rows, img_emb_1.npy has 5", None, "metadata_1.parquet"),
        ("vectors", "img_emb_2.npy has 3 rows, text_emb_2.npy has 2", None, "img_emb_2.npy"),
        ("vectors", "non-finite image vector", "d1", "img_emb_3.npy"),
        ("vectors", "non-finite text vector", "d3", "img_emb_3.npy"),
        ("vectors", "zero image vector", "d4", "img_emb_3.npy"),
        ("vectors", "dimension 4 differs from 8 of the first part", None, "img_emb_4.npy"),
        ("vectors", "text_emb_5.npy missing", None, "img_emb_5.npy"),
        ("read", "duplicate sample id", "a0", "img_emb_6.npy"),
        ("read", rejects[-1].reason, None, "img_emb_7.npy"),
    ]
    assert rejects[-1].reason.startswith("unreadable img_emb_7.npy")
    assert [r.item_ref.rsplit("#", 1)[1] for r in rejects[2:5]] == ["1", "3", "4"]
    # the rows kept are exactly the finite ones, in float32
    d_rows = np.concatenate([c.img for c in chunks if c.part == 3])
    np.testing.assert_array_equal(d_rows, bad_rows[[0, 2]])
    assert all(np.isfinite(c.img).all() and np.isfinite(c.txt).all() for c in chunks)


# --------------------------------------------------------------------------- COCO image ids: both duplicate variants


def _coco(tmp_path: Path, images: list[dict], annotations: list[dict]) -> Path:
    ann = tmp_path / "captions_val2017.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations}))
    return ann


def test_coco_duplicate_image_id_same_file_is_a_reject_not_a_silent_merge(tmp_path: Path) -> None:
    ann = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                           {"id": 1, "file_name": "a.jpg"}],
                [{"id": 10, "image_id": 1, "caption": "a"}, {"id": 11, "image_id": 2, "caption": "b"},
                 {"id": 12, "image_id": 1, "caption": "a again"}])
    read = read_coco(ann, tmp_path)
    # the first entry is kept with every caption of its id
    assert [(s.sample_id, s.image_id) for s in read.samples] == [("10", "1"), ("12", "1"), ("11", "2")]
    assert [(r.item_ref.rsplit("#", 1)[1], r.stage, r.reason, r.image_id, r.n_images, r.n_captions)
            for r in read.rejects] == [("images[2]", "read", "duplicate image id", "1", 1, 0)]


def test_coco_duplicate_image_id_other_file_is_a_reject_and_reading_goes_on(tmp_path: Path) -> None:
    ann = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "other.jpg"},
                           {"id": 1, "file_name": "third.jpg"}],
                [{"id": 10, "image_id": 1, "caption": "a"}])
    read = read_coco(ann, tmp_path)  # used to raise SourceError, which stopped the whole run
    assert [(s.sample_id, Path(s.image_ref).name) for s in read.samples] == [("10", "a.jpg")]
    assert [(r.item_ref.rsplit("#", 1)[1], r.reason) for r in read.rejects] == [
        ("images[1]", "duplicate image id, different file"), ("images[2]", "duplicate image id, different file")]


def test_coco_image_without_caption_and_image_whose_captions_all_fail(tmp_path: Path) -> None:
    from clipgeo.sources.base import settle_drops

    ann = _coco(tmp_path, [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                           {"id": 3, "file_name": "c.jpg"}, {"id": 4, "file_name": "d.jpg"}],
                [{"id": 10, "image_id": 1, "caption": "kept"}, {"id": 11, "image_id": 2, "caption": " "},
                 {"id": 12, "image_id": 2, "caption": ""}, {"id": 13, "image_id": 7, "caption": "orphan"},
                 {"id": 14, "image_id": 4, "caption": "kept too"}])
    read = read_coco(ann, tmp_path)
    got = [(r.reason, r.image_id, r.n_images, r.n_captions) for r in settle_drops(read.samples, read.rejects)]
    assert got == [
        ("empty caption", "2", 1, 1),       # image 2 is lost with its captions: counted on the first
        ("empty caption", "2", 0, 1),
        ("image_id not in images", None, 0, 1),
        ("image has no caption", "3", 1, 0),
    ]
    # limit_images=1 takes image 1 only: images 2-4 are out of scope, not rejects
    read = read_coco(ann, tmp_path, limit_images=1)
    assert [r.reason for r in read.rejects] == ["image_id not in images"]


# --------------------------------------------------------------------------- the hostile COCO folder, end to end

#: (stage, reason) -> how many bad inputs of that kind the hostile folder holds. The README's
#: rejects query must give exactly this, however many models embed the dataset.
HOSTILE = {
    ("read", "missing file"): 1,
    ("read", "zero-byte file"): 1,
    ("decode", "not an image (cannot identify)"): 1,
    ("decode", "truncated image"): 1,
    ("decode", f"decompression bomb: 132000000 pixels > limit {DEFAULT_MAX_PIXELS}"): 1,
    ("read", "duplicate image id"): 1,
    ("read", "duplicate image id, different file"): 1,
    ("read", "image has no caption"): 1,
    ("read", "image_id not in images"): 1,
    ("read", "duplicate sample id"): 1,
    ("caption", "empty caption"): 2,
    ("caption", "caption not valid UTF-8 (lone surrogate at offset 4)"): 1,
}


def hostile_coco(root: Path) -> tuple[Path, Path]:
    """A COCO folder with one of each hostile case (see :data:`HOSTILE`) and 4 usable images."""
    img = root / "images"
    img.mkdir(parents=True)
    for k in range(5):
        _noise((48, 40), seed=k).save(img / f"good{k}.jpg")
    (img / "zero.jpg").write_bytes(b"")
    (img / "notes.jpg").write_text("not a picture\n" * 10)
    data = _jpeg_bytes(_noise((200, 150), 9))
    (img / "cut.jpg").write_bytes(data[: len(data) // 2])
    huge_png(img / "bomb.png", 12000, 11000)
    images = [
        {"id": 1, "file_name": "good0.jpg"}, {"id": 2, "file_name": "good1.jpg"},
        {"id": 3, "file_name": "good2.jpg"}, {"id": 4, "file_name": "good3.jpg"},
        {"id": 5, "file_name": "missing.jpg"}, {"id": 6, "file_name": "zero.jpg"},
        {"id": 7, "file_name": "notes.jpg"}, {"id": 8, "file_name": "cut.jpg"},
        {"id": 9, "file_name": "bomb.png"},
        {"id": 1, "file_name": "good0.jpg"},     # the same id and file again
        {"id": 2, "file_name": "good4.jpg"},     # the same id, another file
        {"id": 10, "file_name": "good4.jpg"},    # no annotation names it
        {"id": 11, "file_name": "good4.jpg"},    # its only caption is empty
    ]
    anns = [
        {"id": 100, "image_id": 1, "caption": "a red square"},
        {"id": 101, "image_id": 1, "caption": "<script>alert(1)</script> a square"},
        {"id": 102, "image_id": 2, "caption": LONG},
        {"id": 103, "image_id": 3, "caption": "noise"},
        {"id": 104, "image_id": 4, "caption": "more noise"},
        {"id": 105, "image_id": 5, "caption": "gone 1"}, {"id": 106, "image_id": 5, "caption": "gone 2"},
        {"id": 107, "image_id": 6, "caption": "zero"}, {"id": 108, "image_id": 7, "caption": "text"},
        {"id": 109, "image_id": 8, "caption": "cut"}, {"id": 110, "image_id": 9, "caption": "bomb"},
        {"id": 111, "image_id": 4, "caption": "   "},                  # empty
        {"id": 112, "image_id": 4, "caption": "bad \ud800 surrogate"},  # not UTF-8
        {"id": 103, "image_id": 4, "caption": "duplicate annotation id"},
        {"id": 113, "image_id": 999, "caption": "orphan"},
        {"id": 114, "image_id": 11, "caption": ""},                    # empty: image 11 lost with it
    ]
    return _coco(root, images, anns), img


def _rows(con, sql: str, params=None) -> list[tuple]:
    from clipgeo.store import catalog

    return catalog.execute(con, sql, params)


def test_hostile_coco_rejects_counted_once_on_a_multi_model_run(tmp_path: Path) -> None:
    from clipgeo.core.config import DataHome
    from clipgeo.stages.embedding import ModelRef, embed_run
    from clipgeo.stages.ingest import ingest_coco
    from clipgeo.store import catalog

    ann, img = hostile_coco(tmp_path / "coco")
    home = DataHome.resolve(tmp_path / "home")
    info = ingest_coco(home, ann, img, name="hostile")
    assert (info.n_images, info.n_samples) == (4, 5)  # ids 1-4 (good0..good3), captions 100-104
    runs = [embed_run(home, ModelRef(name), info.dataset_id, progress=False)
            for name in ("clipgeo-tiny-vit", "clipgeo-tiny-vit-w128")]
    assert len({r.run_id for r in runs}) == 2
    assert all((r.n_images, r.n_texts) == (4, 5) for r in runs)
    # a file deleted after ingest: the third model's embedding cannot use it, a reject of that run only
    (img / "good3.jpg").unlink()
    late = embed_run(home, ModelRef("clipgeo-tiny-vit", None), info.dataset_id, force=True, progress=False)
    assert (late.n_images, late.n_texts) == (3, 4)
    with catalog.session(home, read_only=True) as con:
        # the README's query: each bad input once, per-run losses under stage 'embed'
        got = {(s, r): n for s, r, n in _rows(con, "select stage, reason, count(*) from rejects group by all")}
        assert got == {**HOSTILE, ("embed", "missing file"): 1}
        assert _rows(con, "select run_id, image_id, n_images, n_captions from rejects where stage = 'embed'") == [
            (late.run_id, "4", 1, 1)]
        assert _rows(con, "select count(*) from rejects where stage <> 'embed' and run_id is not null") == [(0,)]
        # a refused image is one row that carries its captions
        assert _rows(con, "select n_images, n_captions from rejects where reason = 'missing file' "
                          "and run_id is null") == [(1, 2)]
        # ... and the README's cost query: what the bad inputs took with them
        assert _rows(con, "select sum(n_images), sum(n_captions) from rejects where stage <> 'embed'") == [(9, 11)]
        counts = _rows(con, "select * from v_report_dataset_counts")
        # kept: good0..good3 (ids 1-4) with captions 100-104 (the later 103 is a duplicate)
        # dropped images: 5 bad files + 2 duplicate entries + 1 uncaptioned + 1 whose only caption is empty
        # dropped captions: 6 (of the bad files: 2 + 1 + 1 + 1 + 1) + 2 empty + 1 UTF-8 + 1 duplicate + 1 orphan
        assert counts == [(info.dataset_id, "hostile:val2017", 4, 5, 9, 11)]
        per_reason = {(s, r): (n, ex) for _, name, s, r, n, ex in _rows(con, "select * from v_report_rejects")}
        assert {k: v[0] for k, v in per_reason.items()} == {**HOSTILE, ("embed", "missing file"): 1}
        assert per_reason[("read", "missing file")][1] == ["missing.jpg (id 5)"]
        assert per_reason[("caption", "empty caption")][1] == [
            "captions_val2017.json#annotations[11] (id 111)", "captions_val2017.json#annotations[15] (id 114)"]
        assert per_reason[("read", "duplicate image id, different file")][1] == [
            "captions_val2017.json#images[10] (id 2)"]
        # a refused caption that had text shows an excerpt of it
        assert per_reason[("read", "duplicate sample id")][1] == [
            "captions_val2017.json#annotations[13] (id 103): duplicate annotation id"]
        assert per_reason[("caption", "caption not valid UTF-8 (lone surrogate at offset 4)")][1] == [
            "captions_val2017.json#annotations[12] (id 112): bad \ufffd surrogate"]
        assert not any(str(tmp_path) in e for _, ex in per_reason.values() for e in ex)  # no folders
    # ingesting again replaces the dataset-level rows instead of adding to them
    ingest_coco(home, ann, img, name="hostile")
    with catalog.session(home, read_only=True) as con:
        got = {(s, r): n for s, r, n in _rows(con, "select stage, reason, count(*) from rejects group by all")}
    assert got == {**HOSTILE, ("read", "missing file"): 2, ("embed", "missing file"): 1}  # good3.jpg is gone now


def test_report_views_on_an_empty_catalog(tmp_path: Path) -> None:
    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog

    home = DataHome.resolve(tmp_path / "home")
    with catalog.session(home) as con:
        for view, cols in (("v_report_rejects", ["dataset_id", "dataset_name", "stage", "reason", "n", "examples"]),
                           ("v_report_dataset_counts", ["dataset_id", "dataset_name", "n_images_kept",
                                                        "n_captions_kept", "n_images_dropped", "n_captions_dropped"])):
            described = _rows(con, f"describe {view}")
            assert [c[0] for c in described] == cols
            assert _rows(con, f"select * from {view}") == []
        assert dict((c[0], c[1]) for c in _rows(con, "describe v_report_rejects"))["examples"] == "VARCHAR[]"


def test_unique_index_refuses_a_repeated_reject(tmp_path: Path) -> None:
    import duckdb

    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog

    home = DataHome.resolve(tmp_path / "home")
    row = {"dataset_id": "d", "item_ref": "/x/a.jpg", "stage": "read", "reason": "missing file", "image_id": "1"}
    with catalog.session(home) as con:
        assert catalog.insert_rejects(con, [row, dict(row), {**row, "image_id": "2"}]) == 2
        with pytest.raises(duckdb.ConstraintException):
            catalog.insert(con, "rejects", [row])
        assert catalog.insert(con, "rejects", [{**row, "run_id": "r1"}]) == 1  # another run's row is another row


def test_migration_010_folds_per_model_rows_of_an_old_home(tmp_path: Path) -> None:
    """A home written before 010: an image reject per model and a "caption's image was
    rejected" row per caption and model become one dataset-level row per bad image."""
    import shutil

    import duckdb

    from clipgeo.core.config import SQL_DIR
    from clipgeo.store import catalog

    old = tmp_path / "sql_old"
    (old / "schema").mkdir(parents=True)
    (old / "views").mkdir()
    for f in (SQL_DIR / "schema").glob("*.sql"):
        if int(f.name[:3]) < 10:
            shutil.copy(f, old / "schema" / f.name)
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    catalog.migrate(con, old)
    catalog.insert(con, "datasets", [{"dataset_id": "coco-0123abcd:val", "source": "coco", "n_rejects": 1}])
    catalog.insert(con, "samples", [
        {"dataset_id": "coco-0123abcd:val", "sample_id": s, "image_id": i, "image_ref": f"/d/{i}.jpg", "caption": "c"}
        for s, i in (("10", "1"), ("11", "1"), ("12", "2"))])
    rows = [{"dataset_id": "coco-0123abcd:val", "run_id": None, "item_ref": "/d/ann.json#annotations[3]",
             "stage": "caption", "reason": "empty caption", "sample_id": "13"}]
    for run in ("rA", "rB"):
        rows.append({"dataset_id": "coco-0123abcd:val", "run_id": run, "item_ref": "/d/1.jpg", "stage": "read",
                     "reason": "missing file", "sample_id": "1"})
        rows += [{"dataset_id": "coco-0123abcd:val", "run_id": run, "item_ref": "/d/1.jpg", "stage": "embed",
                  "reason": "caption's image was rejected", "sample_id": s} for s in ("10", "11")]
    rows.append(dict(rows[0]))  # an exact repeat
    catalog.insert(con, "rejects", rows)
    assert "010_rejects_once.sql" in catalog.migrate(con)
    got = _rows(con, "select run_id, item_ref, stage, reason, sample_id, image_id, n_images, n_captions "
                     "from rejects order by stage")
    assert got == [(None, "/d/ann.json#annotations[3]", "caption", "empty caption", "13", None, 0, 1),
                   (None, "/d/1.jpg", "read", "missing file", None, "1", 1, 2)]
    assert _rows(con, "select stage, reason, count(*) from rejects group by all order by 1") == [
        ("caption", "empty caption", 1), ("read", "missing file", 1)]
    # the samples of the refused image are still in the old home; the counts view leaves them out
    assert _rows(con, "select * from v_report_dataset_counts") == [("coco-0123abcd:val", "coco:val", 1, 1, 1, 3)]
    assert _rows(con, "select n_rejects from datasets") == [(2,)]
    con.close()


def test_snippet_of_a_refused_caption() -> None:
    from clipgeo.sources.base import snippet

    assert snippet("  two\n\tlines  ") == "two lines"
    assert snippet(LONG) == LONG[:59] + "\u2026" and len(snippet(LONG)) == 60
    assert snippet(b"caf\xe9 au lait") == "caf\ufffd au lait"
    assert snippet("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert snippet("   ") is None and snippet(None) is None
