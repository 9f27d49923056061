"""Serve every clipgeo deployment from this process (``clipgeo serve``).

Start a local Prefect server first (``prefect server start --host 127.0.0.1``), point
``PREFECT_API_URL`` at it, then run ``clipgeo serve``: the deployments appear in the UI,
where runs and re-runs (with changed parameters) are triggered; this process executes them.
The same deployments are declared in ``prefect.yaml`` for ``prefect deploy`` with a worker.
"""

from __future__ import annotations

from prefect import serve

import flows  # noqa: F401
from flows.analyse import analyse_flow, report_flow
from flows.embed import embed_flow
from flows.dataset import dataset_pipeline
from flows.pipeline import ablation, pipeline

NIGHTLY = "0 3 * * *"   # re-analyse runs whose analysis is older than the code
WEEKLY = "0 6 * * 1"    # Monday morning comparison report


def deployments(home: str | None = None) -> list:
    base = {"home": home} if home else {}
    return [
        pipeline.to_deployment(name="offline-default", parameters=base,
                               description="The whole pipeline on the offline default (shapes + tiny InfoNCE/InfoLOOB)."),
        ablation.to_deployment(name="ablation", parameters=base,
                               description="Four tiny models: {InfoNCE, InfoLOOB} x {without, with Hopfield} on shapes."),
        dataset_pipeline.to_deployment(name="dataset", parameters=base,
                                       description="Your data (coco / folder / webdataset / embeddings) with your models."),
        embed_flow.to_deployment(name="embed", parameters=base,
                                 description="Embed one registered dataset with one model (sharded, resumable)."),
        analyse_flow.to_deployment(name="analyse", parameters=base, description="Measure stored runs."),
        analyse_flow.to_deployment(name="nightly-reanalysis", parameters={**base, "stale_only": True}, cron=NIGHTLY,
                                   description="Re-measure runs whose analysis is older than the code's version."),
        report_flow.to_deployment(name="weekly-comparison", parameters=base, cron=WEEKLY,
                                  description="Reports for every measured run and their comparison."),
    ]


def main(home: str | None = None, limit: int | None = None) -> None:
    serve(*deployments(home), limit=limit)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", default=None)
    ap.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    a = ap.parse_args()
    main(a.home, a.limit)
