"""``python -m workbench.report --experiment NAME [--parent RUN_ID]``: compare stages and bitwidths."""

from __future__ import annotations

import argparse
import os
import sys

from workbench.paths import under
from workbench.reporting.report import ReportError, build_report
from workbench.tracking.mlflow_run import open_client, resolve_tracking_uri
from workbench.tracking.probe import TrackingUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="workbench", help="MLflow experiment name (default: workbench)")
    parser.add_argument("--parent", default=None, help="only the child runs of this parent run (a sweep or pipeline)")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db")
    parser.add_argument("--outputs-dir", default="outputs")
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri, args.outputs_dir)
    out = under(os.path.join(args.outputs_dir, "reports"), args.experiment + (f"-{args.parent[:8]}" if args.parent else ""))
    try:
        report = build_report(open_client(uri), args.experiment, out, args.parent)
    except TrackingUnavailable as err:
        print(f"workbench.report: {err}", file=sys.stderr)
        return 2
    except ReportError as err:
        print(f"workbench.report: {err}", file=sys.stderr)
        return 1
    print(report.markdown())
    print(f"wrote {len(report.files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
