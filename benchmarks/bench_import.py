"""Import of precomputed embeddings (clip-retrieval / LAION layout) into LanceDB: streaming vs baseline.

    .venv/bin/python benchmarks/bench_import.py                  # 1,000,000 x 768 float16 pairs
    .venv/bin/python benchmarks/bench_import.py --rows 100000    # quicker
    .venv/bin/python benchmarks/bench_import.py --tmp /big/disk  # where the data + tables go

What it does:

1. generates ``--rows`` image and text vectors (unit-norm, ``--dim`` 768, stored float16: a
   50,000-row random block per modality, cyclically shifted by a different amount per block) in the
   release layout ``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``,
   ``metadata/metadata_{i}.parquet`` (``key``, ``caption``, ``url``) in ``--parts`` parts, under a
   temporary folder (about ``rows * dim * 4`` bytes: 3.1 GB at the default);
2. imports it into a LanceDB table of one row per pair (``sample_id``, ``image_id``, ``caption``,
   ``img`` and ``txt`` as ``FixedSizeList<float32>[dim]``; 6.1 GB at the default), with

   * **baseline**: ``np.load`` every part whole, concatenate, convert to float32, build one
     pyarrow table, ``create_table(data=table)``;
   * **stream**: :func:`clipgeo.sources.embeddings.iter_embedding_chunks` (``--chunk-rows``
     rows at a time) turned into RecordBatches, ``create_table(data=RecordBatchReader)``;
   * **stream-read**: the same iterator without writing (the reader's own rate);

   each in its own subprocess, so that each peak RSS (``ru_maxrss``) is its own;
3. prints rows/s, seconds and peak RSS per method, and the stream/baseline ratios.

The data are generated once and read from the page cache by every method (the first method run
is not penalised: generation leaves the files cached when memory allows). No assertion: a report.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCEDB_LOG", "error")

import numpy as np

TABLE = "pairs"


def generate(root: Path, rows: int, dim: int, parts: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, rows, parts + 1).astype(np.int64)
    step = 50_000
    # One random block of unit vectors per modality, written cyclically shifted by a different
    # amount for every block: distinct unit-norm rows at a fraction of the cost of drawing
    # rows * dim normals (the import does not care what the numbers are).
    blocks = {}
    for name in ("img_emb", "text_emb"):
        x = rng.standard_normal((min(step, rows), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        blocks[name] = x.astype(np.float16)
    shift = 0
    for i in range(parts):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        n = hi - lo
        for name, folder in (("img_emb", "img_emb"), ("text_emb", "text_emb")):
            out = np.lib.format.open_memmap(root / folder / f"{name}_{i}.npy", mode="w+",
                                            dtype=np.float16, shape=(n, dim))
            for s in range(0, n, step):
                e = min(s + step, n)
                shift += 1
                out[s:e] = np.roll(blocks[name][: e - s], shift % dim, axis=1)
            out.flush()
            del out
        keys = [f"{k:09d}" for k in range(lo, hi)]
        pq.write_table(pa.table({
            "key": keys,
            "caption": [f"caption of image {k}" for k in keys],
            "url": [f"https://example.com/{k}.jpg" for k in keys],
        }), root / "metadata" / f"metadata_{i}.parquet")


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema([
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("caption", pa.string()),
        ("img", pa.list_(pa.float32(), dim)),
        ("txt", pa.list_(pa.float32(), dim)),
    ])


def _fsl(mat: np.ndarray):
    import pyarrow as pa

    mat = np.ascontiguousarray(mat, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])


def run_baseline(root: Path, db: Path, dim: int) -> int:
    """Plain: load everything with numpy, one table, one write."""
    import lancedb
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_parts = len(list((root / "img_emb").glob("img_emb_*.npy")))
    img = np.concatenate([np.load(root / "img_emb" / f"img_emb_{i}.npy") for i in range(n_parts)]).astype(np.float32)
    txt = np.concatenate([np.load(root / "text_emb" / f"text_emb_{i}.npy") for i in range(n_parts)]).astype(np.float32)
    meta = pa.concat_tables([pq.read_table(root / "metadata" / f"metadata_{i}.parquet") for i in range(n_parts)])
    table = pa.table({
        "sample_id": meta.column("key"), "image_id": meta.column("key"), "caption": meta.column("caption"),
        "img": _fsl(img), "txt": _fsl(txt),
    }, schema=_schema(dim))
    tbl = lancedb.connect(str(db)).create_table(TABLE, data=table, schema=_schema(dim), mode="overwrite")
    return tbl.count_rows()


def _batches(root: Path, chunk_rows: int, dim: int):
    import pyarrow as pa

    from clipgeo.sources.embeddings import iter_embedding_chunks

    schema = _schema(dim)
    for c in iter_embedding_chunks(root, chunk_rows=chunk_rows):
        if len(c) == 0:
            continue
        yield pa.record_batch([
            pa.array(c.sample_ids, pa.string()), pa.array(c.image_ids, pa.string()),
            pa.array(c.captions, pa.string()), _fsl(c.img), _fsl(c.txt),
        ], schema=schema)


def run_stream(root: Path, db: Path, dim: int, chunk_rows: int) -> int:
    import lancedb
    import pyarrow as pa

    reader = pa.RecordBatchReader.from_batches(_schema(dim), _batches(root, chunk_rows, dim))
    tbl = lancedb.connect(str(db)).create_table(TABLE, data=reader, schema=_schema(dim), mode="overwrite")
    return tbl.count_rows()


def run_stream_read(root: Path, dim: int, chunk_rows: int) -> int:
    return sum(b.num_rows for b in _batches(root, chunk_rows, dim))


def child(args: argparse.Namespace) -> None:
    root, db = Path(args.root), Path(args.db)
    t0 = time.perf_counter()
    if args.child == "baseline":
        n = run_baseline(root, db, args.dim)
    elif args.child == "stream":
        n = run_stream(root, db, args.dim, args.chunk_rows)
    else:
        n = run_stream_read(root, args.dim, args.chunk_rows)
    dt = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": n, "seconds": dt, "peak_rss_mb": peak_kb / 1024}))


def _measure(method: str, root: Path, db: Path, args: argparse.Namespace) -> dict:
    shutil.rmtree(db, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", method, "--root", str(root), "--db", str(db),
           "--dim", str(args.dim), "--chunk-rows", str(args.chunk_rows)]
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    size = sum(f.stat().st_size for f in db.rglob("*") if f.is_file()) if db.exists() else 0
    shutil.rmtree(db, ignore_errors=True)
    res["table_gb"] = size / 1e9
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--parts", type=int, default=10, help="number of img_emb_{i}.npy parts")
    ap.add_argument("--chunk-rows", type=int, default=65536)
    ap.add_argument("--tmp", type=str, default=None, help="folder for the data and tables")
    ap.add_argument("--methods", default="stream-read,stream,baseline")
    ap.add_argument("--child", choices=["baseline", "stream", "stream-read"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="clipgeo-bench-import-", dir=args.tmp) as tmp:
        root, db = Path(tmp) / "release", Path(tmp) / "lance"
        t0 = time.perf_counter()
        generate(root, args.rows, args.dim, args.parts)
        gb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e9
        print(f"generated {args.rows:,} x {args.dim} float16 pairs in {args.parts} parts "
              f"({gb:.2f} GB) in {time.perf_counter() - t0:.1f} s; chunk_rows={args.chunk_rows:,}")
        results = {}
        for method in args.methods.split(","):
            r = _measure(method, root, db, args)
            results[method] = r
            assert r["rows"] == args.rows, r
            table = f"  table {r['table_gb']:.2f} GB" if r["table_gb"] else ""
            print(f"  {method:<12} {r['rows'] / r['seconds']:>12,.0f} rows/s  {r['seconds']:>7.1f} s  "
                  f"peak RSS {r['peak_rss_mb']:>8,.0f} MB{table}")
        if "stream" in results and "baseline" in results:
            s, b = results["stream"], results["baseline"]
            print(f"  stream / baseline: rate x{(s['rows'] / s['seconds']) / (b['rows'] / b['seconds']):.2f}, "
                  f"peak RSS x{s['peak_rss_mb'] / b['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
