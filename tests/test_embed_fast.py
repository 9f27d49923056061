"""The fast image path against the reference (Pillow + open_clip's transform), on CPU.

Stated tolerances:

* decoding: libjpeg-turbo through ``decode_jpeg`` gives the same pixels as Pillow (checked
  exactly, after EXIF orientation);
* preprocessing: the model input, mapped back to 0..255 levels, is within **1 level** of the
  reference's on every pixel with the float resize (CUDA's), **2 levels** with the uint8
  kernels (CPU's; 2 only where images are enlarged), and within 0.1 level on average
  (measured 0.00-0.07);
* vectors: per-sample cosine to the reference **>= 0.9999** (the issue asks 0.999 end to
  end on GPU, where fp16 adds its own error).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from clipgeo.embedding.embed import embed_image_refs, embed_images
from clipgeo.embedding.image_path import EmbedProfile, preprocess_refs, probe_jpeg
from clipgeo.embedding.precision import prepare_model, resolve_precision
from clipgeo.embedding.workers import default_num_workers, resolve_num_workers
from clipgeo.models.loader import LoadedModel, load_model
from clipgeo.embedding.preprocess import apply_orientation, spec_from_transform
from clipgeo.sources.images import load_image, tar_ref
from tests.test_bad_input import huge_png

REPO = Path(__file__).resolve().parents[1]
TINY = "clipgeo-tiny-vit"


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB image (gradients + blobs + a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(4):
            cx, cy, s = rng.random(3)
            img[..., c] += rng.random() * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.1 * s))
        img[..., c] += rng.random() * xx + rng.random() * yy
    img = img / img.max() * 230 + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The image kinds the fast path must match the reference on."""
    d = tmp_path_factory.mktemp("fast-good")
    out: dict[str, str] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw) -> None:
        p = d / name
        im.save(p, fmt, **kw)
        out[name] = str(p)

    save("photo.jpg", Image.fromarray(_photo(640, 480)), "JPEG", quality=90)
    save("portrait.jpg", Image.fromarray(_photo(480, 640, 1)), "JPEG", quality=90)
    save("progressive.jpg", Image.fromarray(_photo(333, 250, 2)), "JPEG", quality=85, progressive=True)
    save("wide.jpg", Image.fromarray(_photo(300, 40, 3)), "JPEG", quality=90)  # upscaled 224/40
    save("grey.jpg", Image.fromarray(_photo(200, 150, 4)[..., 0], "L"), "JPEG", quality=90)
    save("one.jpg", Image.new("RGB", (1, 1), (200, 30, 90)), "JPEG", quality=95)
    save("one.png", Image.new("RGB", (1, 1), (20, 130, 190)), "PNG")
    save("photo.png", Image.fromarray(_photo(160, 120, 5)), "PNG")
    save("cmyk.jpg", Image.fromarray(_photo(120, 90, 6)).convert("CMYK"), "JPEG", quality=92)
    arr16 = (_photo(64, 48, 7)[..., 0].astype(np.uint16) * 257)
    save("g16.png", Image.fromarray(arr16), "PNG")
    rgba = Image.fromarray(_photo(100, 80, 8)).convert("RGBA")
    rgba.putalpha(128)
    save("alpha.png", rgba, "PNG")
    base = Image.fromarray(_photo(90, 60, 9))
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        save(f"exif{o}.jpg", base, "JPEG", quality=92, exif=exif.tobytes())
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    save("xmp6.jpg", base, "JPEG", quality=92, xmp=xmp)
    return out


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    torch.manual_seed(0)
    return load_model(TINY, device="cpu")


def _levels(x: torch.Tensor, spec) -> torch.Tensor:
    """Model input back to 0..255 levels."""
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    return (x.float() * std + mean) * 255.0


TRANSFORMS = {
    "shortest-224": lambda: open_clip.image_transform(224, is_train=False),
    "longest-96": lambda: open_clip.image_transform(96, is_train=False, resize_mode="longest", fill_color=0),
    "squash-64x48": lambda: open_clip.image_transform((64, 48), is_train=False, resize_mode="squash",
                                                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    "bilinear-nonsquare": lambda: open_clip.image_transform((80, 64), is_train=False, interpolation="bilinear"),
}


@pytest.mark.parametrize("method", ["uint8", "float"])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_tensor_preprocessing_matches_open_clip(good_files, name, method):
    pre = TRANSFORMS[name]()
    spec = spec_from_transform(pre)
    assert spec is not None, pre
    refs = list(good_files.values())
    x, idx, rejects = preprocess_refs(refs, spec, method=method)
    assert rejects == [] and idx == list(range(len(refs)))
    ref = torch.stack([pre(load_image(r)) for r in refs])
    assert x.shape == ref.shape and x.dtype == torch.float32
    diff = (_levels(x, spec) - _levels(ref, spec)).abs()
    per_image_max = diff.flatten(1).max(1).values
    limit = {"float": 1, "uint8": 2}[method]
    bad = {Path(r).name: round(float(m), 2) for r, m in zip(refs, per_image_max) if m > limit + 0.01}
    assert not bad, f"more than {limit} levels of 255 off the reference: {bad}"
    assert float(diff.mean()) < 0.1, float(diff.mean())


def test_training_and_unknown_transforms_keep_the_reference_path(lm):
    assert spec_from_transform(open_clip.image_transform(224, is_train=True)) is None
    assert spec_from_transform(lambda im: im) is None
    with pytest.raises(ValueError, match="decode='pil'"):
        embed_image_refs(LoadedModel(**{**lm.__dict__, "preprocess": lambda im: im}), ["x.jpg"], decode="tensor",
                         progress=False)
    with pytest.raises(ValueError, match="decode"):
        embed_image_refs(lm, ["x.jpg"], decode="nvjpeg", progress=False)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exactly(good_files, orientation):
    """Decoded on the fast path (decode_jpeg + the tensor transposition) = Pillow + exif_transpose."""
    from torchvision.io import ImageReadMode, decode_jpeg

    path = good_files[f"exif{orientation}.jpg"]
    data = Path(path).read_bytes()
    assert probe_jpeg(data, 10**8) == orientation
    got = apply_orientation(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                        mode=ImageReadMode.RGB), orientation)
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(got.permute(1, 2, 0).numpy(), want)
    assert np.array_equal(want, np.asarray(load_image(path)))  # and that is what the reference loads


def test_xmp_orientation_read_as_pillow_reads_it(good_files):
    path = good_files["xmp6.jpg"]
    assert probe_jpeg(Path(path).read_bytes(), 10**8) == 6
    assert load_image(path).size == (60, 90)


def test_routing(good_files, tmp_path):
    read = lambda n: Path(good_files[n]).read_bytes()  # noqa: E731
    assert probe_jpeg(read("photo.jpg"), 10**8) == 1
    assert probe_jpeg(read("grey.jpg"), 10**8) == 1
    assert probe_jpeg(read("progressive.jpg"), 10**8) == 1
    assert probe_jpeg(read("cmyk.jpg"), 10**8) is None  # CMYK: Pillow
    assert probe_jpeg(read("photo.png"), 10**8) is None
    assert probe_jpeg(read("photo.jpg")[:-100], 10**8) is None  # no EOI: truncated, Pillow decides
    assert probe_jpeg(read("photo.jpg"), 1000) is None  # over the pixel limit: Pillow refuses it


def test_vectors_match_reference_path(lm, good_files):
    refs = list(good_files.values())
    fast, ok_f, fail_f = embed_image_refs(lm, refs, batch_size=8, num_workers=0, decode="tensor", progress=False)
    ref, ok_r, fail_r = embed_image_refs(lm, refs, batch_size=8, num_workers=0, decode="pil", progress=False)
    assert fail_f == fail_r == [] and ok_f.all() and ok_r.all()
    cos = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, dict(zip([Path(r).name for r in refs], cos.round(6)))
    # and against open_clip's own transform + encode_image, independently of clipgeo's loaders
    x = torch.stack([lm.preprocess(load_image(r)) for r in refs])
    with torch.no_grad():
        direct = lm.model.encode_image(x).numpy()
    np.testing.assert_allclose(ref, direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, direct, rtol=0, atol=5e-3)


def _jpeg(seed: int, size=(200, 150)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_photo(*size, seed)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def _corrupt_scan(data: bytes) -> bytes:
    """Garbage in the entropy-coded data, header and EOI intact: passes the probe."""
    sos = data.index(b"\xff\xda")
    body = bytearray(data)
    rng = np.random.default_rng(3)
    start = sos + 20
    body[start: len(body) - 2] = rng.integers(0, 256, len(body) - 2 - start, dtype=np.uint8).tobytes()
    return bytes(body)


def _broken_huffman(data: bytes) -> bytes:
    """A Huffman table with impossible counts: Pillow refuses the image."""
    dht = data.index(b"\xff\xc4")
    body = bytearray(data)
    body[dht + 5: dht + 21] = b"\xff" * 16
    return bytes(body)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Good JPEGs with every reject case of tests/test_bad_input.py mixed in, one batch."""
    d = tmp_path_factory.mktemp("fast-bad")
    refs = []

    def put(name: str, data: bytes | None) -> None:
        p = d / name
        if data is not None:
            p.write_bytes(data)
        refs.append(str(p))

    good = _jpeg(1)
    put("good0.jpg", good)
    for frac in (0.3, 0.6, 0.95):
        put(f"cut{frac}.jpg", good[: int(len(good) * frac)])
    put("good1.jpg", _jpeg(2))
    put("empty.jpg", b"")
    put("missing.jpg", None)
    put("notes.jpg", b"this is a text file, not a JPEG\n" * 20)
    (d / "adir.jpg").mkdir()
    refs.append(str(d / "adir.jpg"))
    put("scan-garbage.jpg", _corrupt_scan(_jpeg(4)))
    put("bad-huffman.jpg", _broken_huffman(_jpeg(5)))
    huge_png(d / "bomb.png", 20000, 20000)
    refs.append(str(d / "bomb.png"))
    huge_png(d / "mid.png", 12000, 11000)
    refs.append(str(d / "mid.png"))
    put("good2.jpg", _jpeg(6, (640, 480)))
    # tar members: good, missing member, missing tar, and a member cut by the shard's end
    tar = d / "s.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in (("k0.jpg", good), ("k1.jpg", good)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    whole = tar.read_bytes()
    start_k1 = whole.index(good, whole.index(good) + len(good))
    (d / "cut.tar").write_bytes(whole[: start_k1 + len(good) // 2])
    refs += [tar_ref(str(tar), "k0.jpg"), tar_ref(str(tar), "nope.jpg"), tar_ref(str(d / "none.tar"), "k0.jpg"),
             tar_ref(str(d / "cut.tar"), "k1.jpg"), tar_ref(str(d / "cut.tar"), "k0.jpg")]
    return refs


@pytest.mark.parametrize(("workers", "start"), [(0, None), (2, None), (2, "forkserver")])
def test_rejects_parity_bad_jpeg_inside_a_batch(lm, bad_files, workers, start, monkeypatch):
    """In the main loop, on the decode thread (a small job) and in worker processes (asked for
    by naming a start method)."""
    from clipgeo.embedding import workers as worker_mod

    if start:
        monkeypatch.setenv("CLIPGEO_WORKER_START", start)
    # a small job decodes on the thread only while the fork server is not running: an earlier test
    # of this process may have started it, so this one says it is not (the server stays as it is)
    monkeypatch.setattr(worker_mod, "_server_started", False)
    prof = EmbedProfile()
    fast, ok_f, fail_f = embed_image_refs(lm, bad_files, batch_size=len(bad_files), num_workers=workers,
                                          decode="tensor", progress=False, profile=prof)
    assert prof.worker_threads == (workers > 0 and start is None)
    ref, ok_r, fail_r = embed_image_refs(lm, bad_files, batch_size=7, num_workers=0, decode="pil", progress=False)
    named = lambda fails: [(Path(bad_files[i]).name, stage, reason) for i, stage, reason in fails]  # noqa: E731
    assert named(fail_f) == named(fail_r)
    assert np.array_equal(ok_f, ok_r)
    kept = [Path(r).name for r, k in zip(bad_files, ok_f) if k]
    assert {"good0.jpg", "good1.jpg", "good2.jpg"} <= set(kept)  # the rest of the batch is kept
    reasons = {reason for _, _, reason in fail_f}
    assert {"truncated image", "zero-byte file", "missing file", "missing tar member",
            "not an image (cannot identify)"} <= reasons
    assert any(r.startswith("decompression bomb: 400000000 pixels") for r in reasons)
    assert any(r.startswith("corrupt image") for r in reasons), reasons  # bad-huffman.jpg
    cos = (fast * ref).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999
    # even when some other code enabled Pillow's "load truncated images" globally
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _, ok_t, fail_t = embed_image_refs(lm, bad_files, batch_size=8, num_workers=0, decode="tensor", progress=False)
    assert named(fail_t) == named(fail_r) and np.array_equal(ok_t, ok_r)


def test_max_pixels_parity(lm, good_files):
    refs = [good_files["photo.jpg"], good_files["one.jpg"], good_files["photo.png"]]
    for decode in ("tensor", "pil"):
        _, ok, fails = embed_image_refs(lm, refs, max_pixels=50_000, decode=decode, num_workers=0, progress=False)
        assert ok.tolist() == [False, True, True]
        assert fails == [(0, "decode", "decompression bomb: 307200 pixels > limit 50000")]


def test_strict_form_names_the_bad_image(lm, bad_files):
    with pytest.raises(ValueError, match="cut0.3.jpg"):
        embed_images(lm, bad_files[:3], decode="tensor", progress=False)


def test_worker_sizing():
    n = default_num_workers()
    assert 0 <= n <= max((os.cpu_count() or 1) - 1, 1)
    assert resolve_num_workers(None, 1) == 0  # one batch: nothing to overlap
    assert resolve_num_workers(None, 3) == min(n, 3)
    assert resolve_num_workers(0, 100) == 0 and resolve_num_workers(5, 1) == 5
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers(-1, 4)


def test_decode_in_thread_policy(monkeypatch):
    from clipgeo.embedding import workers

    monkeypatch.delenv("CLIPGEO_WORKER_START", raising=False)
    monkeypatch.setattr(workers, "_server_started", False)
    assert workers.decode_in_thread(10**6, 1)  # one worker: a thread, whatever the size
    assert workers.decode_in_thread(workers.THREADS_BELOW_IMAGES - 1, 7)  # small job, server not running
    assert not workers.decode_in_thread(workers.THREADS_BELOW_IMAGES, 7)  # large: worker processes
    assert not workers.decode_in_thread(100, 0)  # num_workers=0: the main loop decodes
    monkeypatch.setattr(workers, "_server_started", True)  # processes start cheaply now
    assert not workers.decode_in_thread(100, 7) and workers.decode_in_thread(100, 1)
    monkeypatch.setattr(workers, "_server_started", False)
    monkeypatch.setenv("CLIPGEO_WORKER_START", "forkserver")  # worker processes asked for
    assert not workers.decode_in_thread(100, 1)
    workers.worker_context()
    assert workers.fork_server_started()


def test_cpu_decode_thread_starts_no_process(lm, bad_files, monkeypatch):
    """The default CPU call with one worker (or a small job) asks for no multiprocessing context
    (nothing forked, no fork server started: issue 33) and gives the main loop's exact result."""
    import clipgeo.embedding.image_path as fp
    from clipgeo.embedding import workers as wk

    def no_processes():
        raise AssertionError("a worker process was asked for")

    monkeypatch.delenv("CLIPGEO_WORKER_START", raising=False)
    monkeypatch.setattr(wk, "_server_started", False)  # as in a fresh process (3 workers, a small job)
    monkeypatch.setattr(fp, "worker_context", no_processes)
    ref, ok_r, fail_r = embed_image_refs(lm, bad_files, batch_size=5, num_workers=0, decode="tensor", progress=False)
    for workers in (1, 3):
        prof, seen = EmbedProfile(), []
        got, ok, fails = embed_image_refs(lm, bad_files, batch_size=5, num_workers=workers, decode="tensor",
                                          progress=False, profile=prof, sink=lambda i, r: seen.extend(i.tolist()))
        assert fails == fail_r and np.array_equal(ok, ok_r)
        np.testing.assert_array_equal(got, ref)
        assert seen == np.flatnonzero(ok).tolist()
        assert prof.worker_threads and prof.workers == 1 and "1 decode thread" in prof.line()


def test_cpu_decode_thread_errors_and_early_stop(lm, good_files, monkeypatch):
    """An error on the decode thread reaches the caller; an error in the main loop (here the
    sink) stops the decode thread."""
    import threading

    import clipgeo.embedding.image_path as fp

    refs = list(good_files.values())

    def sink_fails(idx, rows):
        raise ValueError("sink failed")

    with pytest.raises(ValueError, match="sink failed"):
        fp.embed_image_refs_fast(lm, refs, batch_size=2, num_workers=1, progress=False, sink=sink_fails,
                                 worker_threads=True)
    assert not [t for t in threading.enumerate() if t.name == "clipgeo-prefetch"]

    def boom(*a, **k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(fp, "preprocess_uint8", boom)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        fp.embed_image_refs_fast(lm, refs, batch_size=4, num_workers=1, progress=False, worker_threads=True)


def test_decoder_warning_filters_name_the_decoders_modules():
    """The filters a decode thread sets act on Pillow's and torchvision's warnings only, so the
    main thread's own warnings are handled as usual meanwhile (not raised, not hidden)."""
    import warnings

    import clipgeo.embedding.image_path as fp

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fp._decoder_filters()
        warnings.filterwarnings("ignore", module=fp._PIL_MODULES)
        warnings.warn("the main thread's own", UserWarning)  # module tests.test_embed_fast: shown
        with pytest.raises(UserWarning):
            warnings.warn_explicit("decoder", UserWarning, "image.py", 1, module="torchvision.io.image")
        warnings.warn_explicit("bomb", UserWarning, "Image.py", 1, module="PIL.Image")  # ignored
    assert [str(w.message) for w in seen] == ["the main thread's own"]


def test_precision(good_files):
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("BF16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")
    torch.manual_seed(0)
    lm32 = load_model(TINY, device="cpu")
    refs = list(good_files.values())[:6]
    v32, _, _ = embed_image_refs(prepare_model(lm32, "auto"), refs, num_workers=0, progress=False)
    assert next(lm32.model.parameters()).dtype == torch.float32
    torch.manual_seed(0)
    lm16 = prepare_model(load_model(TINY, device="cpu"), "bf16")
    assert next(lm16.model.parameters()).dtype == torch.bfloat16
    prof = EmbedProfile()
    v16, ok, _ = embed_image_refs(lm16, refs, num_workers=0, progress=False, profile=prof)
    assert v16.dtype == np.float32 and ok.all()
    cos = (v16 * v32).sum(1) / np.linalg.norm(v16, axis=1) / np.linalg.norm(v32, axis=1)
    assert cos.min() > 0.99  # bf16 keeps 8 bits of mantissa
    assert prof.precision == "bfloat16" and prof.images == 6 and "bound: " in prof.line()


def test_profile_names_a_bound_stage():
    p = EmbedProfile(images=10, workers=2, wall=10.0, input_wait=8.0, encode=2.0)
    assert p.bound().startswith("workers")
    p = EmbedProfile(images=10, workers=2, wall=10.0, input_wait=1.0, encode=9.0)
    assert p.bound() == "encode (model)"
    p = EmbedProfile(images=10, workers=8, wall=10.0, input_wait=5.0, producer_wait=0.5, decode_device=3.0,
                     preprocess_device=1.0, encode=5.0)
    assert p.bound() == "device decode + preprocess"
    p = EmbedProfile(images=10, workers=0, wall=10.0, input_wait=7.0, encode=3.0)
    assert p.bound().startswith("read + decode + preprocess")
    assert EmbedProfile.from_dict(p.as_dict()) == p


def test_bench_small_run(tmp_path):
    """The benchmark end to end, reduced: its last line has the agreed form and a sane cosine."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_embed.py"), "--device", "cpu", "--model", TINY,
         "--n", "24", "--batch-size", "8", "--workers", "1", "--captions", "64", "--data", str(tmp_path / "imgs"),
         "--quick"],
        capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    assert list(fields) == ["fast_img_s", "baseline_img_s", "ratio", "min_cos"], last
    assert float(fields["fast_img_s"]) > 0 and float(fields["baseline_img_s"]) > 0
    assert float(fields["min_cos"]) >= 0.999
    assert "bound:" in proc.stdout


@pytest.mark.parametrize(("overlap", "workers"), [(True, 0), (False, 0), (True, 2)])
def test_device_decode_loop_on_cpu(lm, bad_files, overlap, workers):
    """The CUDA path's logic (workers ship bytes; a producer thread decodes with
    decode_jpeg(list) and preprocesses with the float resize; vectors gathered one batch late)
    run on CPU without streams: same rejects, same kept images, same vectors as the reference."""
    from clipgeo.embedding.image_path import embed_image_refs_fast

    seen = []
    got, ok, fails = embed_image_refs_fast(lm, bad_files, batch_size=6, num_workers=workers, progress=False,
                                           overlap=overlap, device_decode=True,
                                           sink=lambda idx, rows: seen.append((idx.tolist(), rows.shape)))
    ref, ok_r, fail_r = embed_image_refs(lm, bad_files, batch_size=7, num_workers=0, decode="pil", progress=False)
    assert fails == fail_r and np.array_equal(ok, ok_r)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999
    flat = [i for idx, _ in seen for i in idx]
    assert flat == sorted(flat) == np.flatnonzero(ok).tolist()  # every kept image once, in order


def test_device_decode_error_in_producer_is_raised(lm, good_files, monkeypatch):
    import clipgeo.embedding.image_path as fp

    def boom(*a, **k):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(fp, "preprocess_uint8", boom)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        fp.embed_image_refs_fast(lm, list(good_files.values()), batch_size=4, num_workers=0, progress=False,
                                 device_decode=True)


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda_only
def test_cuda_preprocessing_close_to_reference(good_files):
    """nvjpeg's IDCT is not libjpeg-turbo's: a few levels per pixel, small on average."""
    pre = open_clip.image_transform(224, is_train=False)
    spec = spec_from_transform(pre)
    refs = list(good_files.values())
    x, idx, rejects = preprocess_refs(refs, spec, device="cuda")
    assert rejects == [] and idx == list(range(len(refs))) and x.is_cuda
    ref = torch.stack([pre(load_image(r)) for r in refs])
    diff = (_levels(x.cpu(), spec) - _levels(ref, spec)).abs()
    assert float(diff.mean()) < 1.5, float(diff.mean())


@cuda_only
def test_cuda_rejects_parity_and_vectors(bad_files, good_files):
    torch.manual_seed(0)
    lm_gpu = prepare_model(load_model(TINY, device="cuda"), "fp16")
    torch.manual_seed(0)
    lm_cpu = load_model(TINY, device="cpu")
    for refs in (bad_files, list(good_files.values())):
        got, ok, fails = embed_image_refs(lm_gpu, refs, batch_size=8, num_workers=2, decode="tensor", progress=False)
        ref, ok_r, fail_r = embed_image_refs(lm_cpu, refs, batch_size=8, num_workers=0, decode="pil", progress=False)
        assert fails == fail_r and np.array_equal(ok, ok_r)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() >= 0.999, cos.min()


def test_worker_side_objects_pickle(bad_files):
    """Workers get refs (strings) and numbers only, so any start method can carry them."""
    import pickle

    import clipgeo.embedding.image_path as fp

    spec = spec_from_transform(open_clip.image_transform(64, is_train=False))
    for obj in (fp._ImageBytes(bad_files, 10**8), fp._Collate(bad_files, 10**8, spec, torch.float32),
                fp._Collate(bad_files, 10**8, None, torch.float16)):
        clone = pickle.loads(pickle.dumps(obj))
        assert clone.refs == bad_files
    item = fp._ImageBytes(bad_files, 10**8)[len(bad_files) - 5]  # a tar member, read in "a worker"
    assert item[1] == fp._JPEG and isinstance(item[2], bytes)
