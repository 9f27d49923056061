"""The ``clipgeo`` command.

    clipgeo run [--home DIR] [--n-train N] [--n-val N] [--steps N] [--model NAME=PRETRAINED] ...
    clipgeo sql "SELECT * FROM v_compare" [--home DIR] [--format table|csv|json]
    clipgeo embed --dataset ID --model NAME[=PRETRAINED] [--shard-images N] [--cluster-address tcp://...]
    clipgeo analyse [--run RUN_ID ...] [--stale-only] [--force]
    clipgeo runs [--home DIR]
    clipgeo report [--home DIR] [--run RUN_ID ...]
    clipgeo serve [--home DIR]          (deployments for the Prefect server at PREFECT_API_URL)

``sql`` opens the catalog read-only; every run's LanceDB vectors table is visible to the
query under its own name (``vectors_<run_id>``), so vectors can be queried with SQL too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import flows  # noqa: F401  (Prefect environment defaults)
from clipgeo.config import DataHome


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="data home (default: $CLIPGEO_HOME or ./clipgeo-data)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="clipgeo", description="Measure the geometry of CLIP-like embedding spaces.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the main pipeline (offline default: shapes + two tiny models)")
    _add_home(run)
    run.add_argument("--n-train", type=int, default=4000, help="shapes images to train the tiny models on")
    run.add_argument("--n-val", type=int, default=1000, help="held-out shapes images that are embedded and measured")
    run.add_argument("--captions-per-image", type=int, default=3)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--steps", type=int, default=400, help="training steps per tiny model")
    run.add_argument("--objective", action="append",
                     choices=["infonce", "infoloob", "infonce+hopfield", "infoloob+hopfield"],
                     help="tiny models to train (repeatable; default infonce and infoloob)")
    run.add_argument("--ablation", action="store_true",
                     help="the paper's 4-way ablation: {infonce, infoloob} x {no Hopfield, Hopfield}")
    run.add_argument("--model", action="append", default=[], metavar="NAME=PRETRAINED",
                     help="also embed an open_clip model: NAME=TAG or NAME=/path/checkpoint.pt (repeatable)")
    run.add_argument("--force", action="append", choices=["train", "embed", "measure"], default=[],
                     help="redo a stage even if its results are stored (repeatable)")
    run.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    run.add_argument("--no-report", action="store_true")
    run.add_argument("--cluster-address", default=None, help="Dask scheduler address (tcp://host:8786) to embed on")

    emb = sub.add_parser("embed", help="embed one registered dataset with one model (the clipgeo-embed flow)")
    _add_home(emb)
    emb.add_argument("--dataset", required=True, help="dataset id (see `clipgeo sql \"select * from datasets\"`)")
    emb.add_argument("--model", required=True, metavar="NAME[=PRETRAINED]")
    emb.add_argument("--force", action="store_true")
    emb.add_argument("--device", default=None)
    emb.add_argument("--shard-images", type=int, default=None, help="images per shard (default 2048)")
    emb.add_argument("--cluster-address", default=None)

    ds = sub.add_parser("dataset", help="your own data: ingest a source, embed with each --model, measure, report")
    _add_home(ds)
    ds.add_argument("source", choices=["coco", "folder", "webdataset", "embeddings"])
    ds.add_argument("path", help="coco: captions_*.json; folder: captions file; webdataset: tar pattern; embeddings: folder")
    ds.add_argument("--image-dir", default=None, help="coco/folder: the folder holding the images")
    ds.add_argument("--model", action="append", default=[], metavar="NAME=PRETRAINED")
    ds.add_argument("--karpathy", default=None, help="coco: Karpathy split file (dataset_coco.json)")
    ds.add_argument("--split", default=None, help="coco with --karpathy: train, val, test, restval or a+b")
    ds.add_argument("--name", default=None, help="a name for the dataset id")
    ds.add_argument("--limit-images", type=int, default=None)
    ds.add_argument("--force", action="append", choices=["embed", "measure"], default=[])
    ds.add_argument("--device", default=None)
    ds.add_argument("--cluster-address", default=None)

    sql = sub.add_parser("sql", help="run a read-only SQL query on the catalog (and vectors)")
    _add_home(sql)
    sql.add_argument("query")
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.add_argument("--max-rows", type=int, default=100, help="rows shown in table format")

    runs = sub.add_parser("runs", help="list runs with their status and provenance")
    _add_home(runs)

    srv = sub.add_parser("serve", help="serve every deployment to the Prefect server at PREFECT_API_URL")
    _add_home(srv)
    srv.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")

    ana = sub.add_parser("analyse", help="re-measure stored runs (the clipgeo-analyse flow)")
    _add_home(ana)
    ana.add_argument("--run", action="append", default=None, help="run ids (default: all embedded runs)")
    ana.add_argument("--stale-only", action="store_true", help="only runs analysed by an older code version")
    ana.add_argument("--force", action="store_true", help="ignore cached results")

    rep = sub.add_parser("report", help="(re)write the HTML reports from the catalog")
    _add_home(rep)
    rep.add_argument("--run", action="append", default=None, help="run ids (default: all measured runs)")
    rep.add_argument("--export", choices=["svg", "png"], default=None, help="also write each chart as a file")
    rep.add_argument("--full-paths", action="store_true",
                     help="keep local paths as stored (default: relative to the data home, else file name + content hash)")
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import pipeline

    pipeline(
        home=args.home,
        n_train=args.n_train,
        n_val=args.n_val,
        captions_per_image=args.captions_per_image,
        seed=args.seed,
        objectives=(["infonce", "infoloob", "infonce+hopfield", "infoloob+hopfield"] if args.ablation
                    else args.objective or ["infonce", "infoloob"]),
        train_steps=args.steps,
        models=args.model,
        force=args.force,
        device=args.device,
        make_report=not args.no_report,
        cluster_address=args.cluster_address,
    )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from flows.embed import embed_flow, task_runner_for
    from flows.pipeline import parse_model

    ref = parse_model(args.model)
    kwargs = {"shard_images": args.shard_images} if args.shard_images else {}
    run_id = embed_flow.with_options(task_runner=task_runner_for(args.cluster_address))(
        ref.model_name, args.dataset, ref.pretrained, home=args.home, force=args.force, device=args.device, **kwargs
    )
    print(run_id)
    return 0


def cmd_dataset(args: argparse.Namespace) -> int:
    from flows.dataset import dataset_pipeline

    dataset_pipeline(
        args.source, args.path, image_dir=args.image_dir, models=args.model, karpathy_split_file=args.karpathy,
        split=args.split, name=args.name, limit_images=args.limit_images, home=args.home, force=args.force,
        device=args.device, cluster_address=args.cluster_address,
    )
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    import polars as pl

    from clipgeo.store.query import read_only_query

    df = read_only_query(DataHome.resolve(args.home), args.query)
    if args.format == "csv":
        sys.stdout.write(df.write_csv())
    elif args.format == "json":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, indent=1) + "\n")
    else:
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=200):
            print(df)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    args.query = (
        "SELECT run_id, status, label, n_images, n_texts, device, analysis_version, updated_at, error"
        " FROM v_runs ORDER BY updated_at"
    )
    args.format, args.max_rows = "table", 1000
    return cmd_sql(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main as serve_main

    serve_main(args.home, args.limit)
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    from flows.analyse import analyse_flow

    for run_id in analyse_flow(args.run, home=args.home, stale_only=args.stale_only, force=args.force):
        print(run_id)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dashboards.build import write_reports
    from clipgeo.store import catalog

    home = DataHome.resolve(args.home)
    run_ids = args.run
    if not run_ids:
        with catalog.session(home, read_only=True) as con:
            run_ids = [r for (r,) in catalog.execute(con, "SELECT run_id FROM runs WHERE status = 'measured' ORDER BY label")]
    for p in write_reports(home, run_ids, export=args.export, full_paths=args.full_paths):
        print(p)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "embed": cmd_embed, "dataset": cmd_dataset, "sql": cmd_sql, "runs": cmd_runs, "report": cmd_report,
                "serve": cmd_serve, "analyse": cmd_analyse}[args.cmd](args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.cmd in ("run", "embed", "dataset"):
            raise
        print(f"clipgeo {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
